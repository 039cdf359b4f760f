"""The local fleet: a Ray cluster mirroring the node pools, with every pool deployed."""
