"""Which ``backend.attention`` choices exist, which may run here, and the order ``auto`` tries them in.

Pure checks of the machine and the installed packages (no model needed); ``plugin.py`` then probes each candidate
on the loaded model, and ``auto`` times those that run and keeps the fastest (auto_attention.py).
"""
from __future__ import annotations

import torch

from backends.hf_staticcache.attention import SDPA_CHOICES
from backends.hf_staticcache.flash_packages import fa2_problem, fa4_problem
from harness.sdk import UserError

FLASH_CHOICES = ("flash_attention_2", "flash_attention_4", "torch_flash")  # static-cache FlashAttention kernels
AUTO_ORDER_CUDA = (*FLASH_CHOICES, "sdpa")
AUTO_ORDER_CPU = ("sdpa", "eager")  # the CPU has no FlashAttention kernel; auto times HF's two
ATTENTION_CHOICES = ("auto", *FLASH_CHOICES, "sdpa", "eager", *SDPA_CHOICES)
FLASH_DTYPES = (torch.float16, torch.bfloat16)

FIXES = {
    "flash_attention_2": "pip install 'flash-attn>=2.6,<3' on a CUDA machine, or use backend.attention=auto",
    "flash_attention_4": "pip install 'enginebench[flash-attn-4]' on a Hopper or Blackwell GPU machine and use "
                         "device=cuda, or use backend.attention=auto",
    "torch_flash": "use device=cuda on a GPU of compute capability 8.0 or newer, or backend.attention=auto",
}


def flash_problem(choice: str, device: str, dtype: torch.dtype) -> str | None:
    """None when ``choice`` (one of FLASH_CHOICES) may run here, else why not (one phrase)."""
    if not device.startswith("cuda"):
        return f"it runs on CUDA GPUs only (device={device})"
    if dtype not in FLASH_DTYPES:
        return f"its kernels take float16 or bfloat16, not {str(dtype).removeprefix('torch.')}"
    if not torch.cuda.is_available():
        return "CUDA is not available to torch here"
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    if choice == "flash_attention_2":
        return fa2_problem() or (None if major >= 8 else f"flash-attn 2 needs compute capability 8.0+, "
                                                         f"this GPU has {major}.{minor}")
    if choice == "flash_attention_4":
        return fa4_problem() or (None if major >= 9 else f"FlashAttention-4 needs compute capability 9.0+ "
                                                         f"(Hopper, Blackwell), this GPU has {major}.{minor}")
    if choice == "torch_flash":
        if major < 8:
            return f"PyTorch's FlashAttention kernel needs compute capability 8.0+, this GPU has {major}.{minor}"
        return None if torch.backends.cuda.is_flash_attention_available() else \
            "this torch build has no FlashAttention kernel"
    raise ValueError(choice)


def candidates(choice: str, device: str) -> list[str]:
    """The choices to probe: ``auto`` probes every candidate of the device and times those that run (the order
    breaks ties only); a named choice is itself."""
    if choice != "auto":
        return [choice]
    return list(AUTO_ORDER_CUDA) if device.startswith("cuda") else list(AUTO_ORDER_CPU)


def check_choice(choice: str, device: str, dtype: torch.dtype) -> None:
    """Refuse a named choice that cannot run here, in one line with the fix, before any model is built."""
    if choice not in ATTENTION_CHOICES:
        raise UserError(f"unknown backend.attention '{choice}'", f"use one of {', '.join(ATTENTION_CHOICES)}")
    if choice in FLASH_CHOICES and (problem := flash_problem(choice, device, dtype)):
        raise UserError(f"backend.attention={choice} cannot run here: {problem}", FIXES[choice])
