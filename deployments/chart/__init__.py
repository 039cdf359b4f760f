"""What the Helm chart carries from the Python side (the VRAM fit table it checks pools with)."""
