"""Which attention kernel runs: SDPA's choice is probed, never assumed.

With a static cache HF passes SDPA a boolean mask over the whole cache; SDPA's FlashAttention kernel refuses any
explicit mask, so "SDPA + static cache" decodes with the efficient, cuDNN or math kernel. We find out which by
running the real model under ``sdpa_kernel(<one backend>)`` for each backend in torch's own priority order: the
first that runs is the one torch picks when left alone. docs/backends.md has the FlashAttention choices.
"""
from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

SDPA_CHOICES = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
KERNEL_NAMES = {v: k for k, v in SDPA_CHOICES.items()}


def priority_order() -> list[SDPBackend]:
    try:
        order = [SDPBackend(i) for i in torch._C._get_sdp_priority_order()]
    except (AttributeError, ValueError):
        order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return [b for b in order if b in KERNEL_NAMES]


def first_kernel_that_runs(run, candidates: list[SDPBackend], device: str) -> str:
    """Run ``run()`` restricted to each candidate in turn; the name of the first that succeeds
    (suffixed ``-cpu`` on the CPU, whose kernels are not the CUDA ones of the same name)."""
    for backend in candidates:
        try:
            with sdpa_kernel([backend]):
                run()
            return KERNEL_NAMES[backend] + ("" if device.startswith("cuda") else "-cpu")
        except RuntimeError:
            continue
    return "none"
