"""`python -m gemma_fleet.cli` runs the gemma-fleet command."""

from gemma_fleet.cli.main import main

main()
