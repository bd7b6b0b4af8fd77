"""``python -m harness`` is the same as the ``enginebench`` command."""
from harness.cli import main

main()
