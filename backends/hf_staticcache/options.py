"""The options of ``hf-flashattn-staticcache`` (``backend.*``): types, defaults, allowed values and what excludes
what. Checked for every job before the first one starts; what depends on the machine (is this FlashAttention
kernel installed, is there a GPU) is checked in ``load``."""
from __future__ import annotations

from dataclasses import dataclass

from backends.hf_staticcache.quantize import INT4_KERNELS
from backends.hf_staticcache.selection import ATTENTION_CHOICES, FLASH_CHOICES
from harness.sdk import UserError, choice, needs

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


@dataclass
class HFOptions:
    # auto | flash_attention_2 | flash_attention_4 | torch_flash | sdpa | eager | flash | efficient | cudnn | math
    # (the last four: SDPA restricted to one kernel)
    attention: str = choice(*ATTENTION_CHOICES)
    compile: str = choice(*COMPILE_MODES)  # torch.compile of the decode step; reduce-overhead = CUDA graphs
    # capture the decode step as a CUDA graph by hand (static cache); with compile=default|max-autotune the
    # compiled step is captured instead of Inductor's CUDA-graph trees replaying it (compile_step.py)
    cuda_graph: bool = needs(False, cache="static")
    cache: str = choice("static", "dynamic")  # dynamic: stock HF DynamicCache, reallocates (the reference)
    # quant=int4: which maintained kernel serves it (quantize.py): tinygemm | mslk | mslk_preshuffled | gemlite
    int4_kernel: str = choice(*INT4_KERNELS)

    def check(self) -> None:
        if self.cuda_graph and self.compile == "reduce-overhead":
            raise UserError("backend.cuda_graph=true captures the step by hand; compile=reduce-overhead replays "
                            "Inductor's own CUDA graphs", "use backend.compile=default (or max-autotune) with "
                            "backend.cuda_graph=true, or drop backend.cuda_graph")
        if self.attention in FLASH_CHOICES and self.cache != "static":
            raise UserError(f"backend.attention={self.attention} attends over the static cache",
                            "drop backend.cache=dynamic, or use backend.attention=sdpa")
