"""A backend whose import calls sys.exit: it is skipped like any import failure."""
import sys

sys.exit(0)
