"""Which TensorRT implementation to use: full TensorRT (``tensorrt``, 10.15+/11.x) or TensorRT for RTX
(``tensorrt_rtx_bindings``), which exposes the same network-definition, builder, parser and runtime API.
The one that ran is recorded with every result."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from harness.sdk import UserError

FLAVOURS = {"tensorrt": "tensorrt", "rtx": "tensorrt_rtx_bindings"}
PIP = "tensorrt-cu13 (full TensorRT, from NVIDIA's index) or tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings"


@dataclass
class TensorRT:
    trt: Any  # the module
    flavour: str  # "tensorrt" | "rtx"
    version: str

    def logger(self):
        return self.trt.Logger(self.trt.Logger.WARNING)


def import_tensorrt(choice: str = "auto") -> TensorRT:
    """``choice``: auto (full TensorRT first, then RTX), tensorrt or rtx."""
    if choice not in ("auto", *FLAVOURS):
        raise UserError(f"unknown backend.flavour '{choice}'", "use backend.flavour=auto, tensorrt or rtx")
    order = list(FLAVOURS) if choice == "auto" else [choice]
    for flavour in order:
        try:
            module = importlib.import_module(FLAVOURS[flavour])
        except ImportError:
            continue
        return TensorRT(module, flavour, getattr(module, "__version__", "?"))
    raise UserError(f"no TensorRT module found (looked for {', '.join(FLAVOURS[f] for f in order)})",
                    f"pip install {PIP}")
