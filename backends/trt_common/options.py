"""Options shared by the TensorRT backends (``backend.*``)."""
from __future__ import annotations

from dataclasses import dataclass

from harness.sdk import choice

FLAVOURS = ("auto", "tensorrt", "rtx")  # auto: full TensorRT first, then TensorRT for RTX


@dataclass
class TrtOptions:
    flavour: str = choice(*FLAVOURS)
    workspace_mib: int = 4096  # builder workspace limit
