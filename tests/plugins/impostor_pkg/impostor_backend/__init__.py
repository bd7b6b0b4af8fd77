"""The impostor's backend: importing it leaves a mark in the environment, so a test sees whether it was loaded."""
import os

from hostile_backend import Working

os.environ["IMPOSTOR_IMPORTED"] = "1"


class Impostor(Working):
    pass
