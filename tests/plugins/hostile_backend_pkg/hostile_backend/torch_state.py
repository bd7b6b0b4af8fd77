"""A backend whose import changes torch's process-wide state: the harness must restore it and say so."""
import torch

from hostile_backend import Working

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)


class Backend(Working):
    pass
