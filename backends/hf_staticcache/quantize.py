"""Weight-only quantization of the HF model with torchao (``quantize_`` with its weight-only configs).

Which torchao tensor serves a scheme (harness/model/quant.py defines the schemes):
- int8, symmetric: ``Int8WeightOnlyConfig`` (``Int8Tensor``: int8 codes, the matmul dequantizes on the fly;
  under ``torch.compile`` inductor fuses the dequantization into the GEMV, gpt-fast's int8 path);
- int4, asymmetric, on CUDA in bfloat16: ``Int4WeightOnlyConfig`` with the ``tile_packed_to_4d`` layout, which runs
  PyTorch's own tinygemm kernel ``_weight_int4pack_mm`` (group sizes 32/64/128/256; its zero point is a float);
- every other integer case (int4 on CPU, asymmetric int8, other group sizes): ``IntxWeightOnlyConfig`` (codes kept
  unpacked in int8, dequantized before the matmul: correct everywhere, no byte saving over int8);
- fp8: ``Float8WeightOnlyConfig`` (float8_e4m3fn codes, one scale per output channel).
All are tensor subclasses that ``torch.compile`` traces, so ``compile=reduce-overhead`` (CUDA graphs) works on them.
Only the decoder layers' linears are quantized (``filter_fn``); the embedding and lm_head stay in model.dtype.

``backend.int4_kernel`` picks among the maintained int4 kernels that torchao 0.18 reaches, so that they can be
measured side by side (docs/tuning.md says which is expected to win and why); each needs CUDA, the dtype in
``KERNEL_DTYPE`` and the asymmetric int4 scheme (the default), since each stores a zero point per group:
- ``tinygemm`` (default): ``Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d")``, PyTorch's own
  ``_weight_int4pack_mm`` (a GEMV-friendly tiled layout; no extra package);
- ``mslk``: ``int4_packing_format="plain"`` (``Int4Tensor``), the CUTLASS mixed-input GEMM
  ``torch.ops.mslk.bf16i4bf16_rowwise`` of the ``mslk`` package (formerly fbgemm-gpu-genai's kernels);
- ``mslk_preshuffled``: ``int4_packing_format="preshuffled"`` (``Int4PreshuffledTensor``), the same library's
  kernel over weights shuffled offline for Hopper's tensor-core layout (``bf16i4bf16_shuffled``);
- ``gemlite``: ``torchao.prototype.quantization.UIntxWeightOnlyConfig`` (gemlite's Triton GEMV/GEMM kernels,
  bit-packed uint4, autotuned per shape). float16 only: torchao 0.18 builds gemlite's ``A16Wn`` without a dtype,
  so gemlite takes its default (float16), and a bfloat16 activation fails in its Triton kernel's ``tl.dot``.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings
from typing import Any

import torch

from harness.sdk import QuantScheme, UserError, is_quantized_param

TINYGEMM_GROUPS = (32, 64, 128, 256)
INT4_KERNELS = ("tinygemm", "mslk", "mslk_preshuffled", "gemlite")
KERNEL_PACKAGE = {"mslk": "mslk", "mslk_preshuffled": "mslk", "gemlite": "gemlite"}
GEMLITE_GROUPS = (32, 64, 128, 256, 512, 1024)
KERNEL_DTYPE = {"tinygemm": torch.bfloat16, "mslk": torch.bfloat16, "mslk_preshuffled": torch.bfloat16,
                "gemlite": torch.float16}


def import_torchao():
    try:
        with warnings.catch_warnings():  # a torch newer than the wheel's C++ extensions: the Python paths we use stay
            warnings.simplefilter("ignore")
            import torchao.quantization as tq
    except ImportError as exc:
        raise UserError("quant=int8|int4|fp8 on the HF backend needs torchao", "pip install torchao") from exc
    return tq


def check_int4_kernel(kernel: str, q: QuantScheme, device: str, dtype: torch.dtype | None) -> None:
    """Refuse an ``int4_kernel`` other than the default that cannot serve this scheme here, in one line
    (``dtype`` None: the run's dtype is not known yet; load checks it)."""
    if kernel == "tinygemm":
        return
    if q.scheme != "int4":
        raise UserError(f"backend.int4_kernel={kernel} applies to quant=int4 only (this run: quant={q.scheme})",
                        "drop backend.int4_kernel or use quant=int4")
    need = str(KERNEL_DTYPE[kernel]).removeprefix("torch.")
    if not device.startswith("cuda") or dtype not in (None, KERNEL_DTYPE[kernel]):
        raise UserError(f"backend.int4_kernel={kernel} runs on CUDA in {need} only",
                        f"use device=cuda model.dtype={need}, or backend.int4_kernel=tinygemm")
    if q.symmetric:
        raise UserError(f"backend.int4_kernel={kernel} stores a zero point per group (asymmetric int4)",
                        "drop quant_options.symmetric=true")
    if kernel == "gemlite" and q.group_size not in GEMLITE_GROUPS:
        raise UserError(f"gemlite takes groups of {GEMLITE_GROUPS}, not {q.group_size}",
                        "use quant_options.group_size=128")
    package = KERNEL_PACKAGE[kernel]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"backend.int4_kernel={kernel} needs the {package} package", f"pip install {package}")
    if kernel == "gemlite":
        mismatch = gemlite_mismatch(importlib.metadata.version("gemlite"), importlib.metadata.version("torchao"))
        if mismatch:
            raise UserError(mismatch, f"pip install gemlite=={GEMLITE_FOR_TORCHAO_0_18}")


# torchao 0.18's UIntxBitPackedTensor unpacks three tensors (W_q, scales, zeros) from gemlite's get_tensor_args;
# gemlite 0.6 returns a fourth (meta_scale), and the quantization then fails deep in torchao with "too many values
# to unpack". 0.5.1.post1 is the newest gemlite that returns three.
GEMLITE_FOR_TORCHAO_0_18 = "0.5.1.post1"


def gemlite_mismatch(gemlite_version: str, torchao_version: str) -> str | None:
    """Why this gemlite cannot serve this torchao (None where the pair is not known to clash)."""
    from packaging.version import Version  # transformers' own dependency

    if Version(torchao_version).release[:2] <= (0, 18) and Version(gemlite_version).release[:2] >= (0, 6):
        return (f"gemlite {gemlite_version} returns four tensors where torchao {torchao_version} reads three "
                f"(UIntxBitPackedTensor)")
    return None


def int4_config(kernel: str, q: QuantScheme):
    """(torchao config, kernel path) of a chosen int4 kernel other than tinygemm (check_int4_kernel passed)."""
    tq = import_torchao()
    if kernel == "gemlite":
        from torchao.prototype.quantization.quant_api import UIntxWeightOnlyConfig

        return UIntxWeightOnlyConfig(group_size=q.group_size, bit_width=4), \
            "torchao UIntxBitPackedTensor (gemlite Triton kernels)"
    packing = {"mslk": "plain", "mslk_preshuffled": "preshuffled"}[kernel]
    kernel_name = {"mslk": "mslk.bf16i4bf16_rowwise", "mslk_preshuffled": "mslk.bf16i4bf16_shuffled"}[kernel]
    return tq.Int4WeightOnlyConfig(group_size=q.group_size, int4_packing_format=packing), \
        f"torchao Int4WeightOnlyConfig({packing}) ({kernel_name})"


def choose_config(q: QuantScheme, device: str, dtype: torch.dtype | None, kernel: str = "tinygemm"):
    """(torchao config, short name of the kernel path) for the scheme on this device and dtype (None: not known
    yet, a check before the run)."""
    if kernel != "tinygemm":
        check_int4_kernel(kernel, q, device, dtype)
        return int4_config(kernel, q)
    tq = import_torchao()
    group = tq.PerGroup(q.group_size) if q.group_size else tq.PerAxis(0)
    cuda = device.startswith("cuda")
    if q.scheme == "fp8":
        if cuda and torch.cuda.get_device_capability(torch.device(device)) < (8, 9):
            raise UserError("quant=fp8 needs a GPU with float8 support (compute capability 8.9+)",
                            "use quant=int8 on this GPU")
        return tq.Float8WeightOnlyConfig(), "torchao Float8Tensor"
    if q.scheme == "int8" and q.symmetric:
        granularity = tq.PerGroup(q.group_size) if q.group_size else tq.PerRow()
        return tq.Int8WeightOnlyConfig(granularity=granularity), "torchao Int8Tensor"
    if q.scheme == "int4" and not q.symmetric and cuda and dtype == torch.bfloat16 \
            and q.group_size in TINYGEMM_GROUPS:
        return (tq.Int4WeightOnlyConfig(group_size=q.group_size, int4_packing_format="tile_packed_to_4d"),
                "torchao Int4TilePackedTo4dTensor (tinygemm _weight_int4pack_mm)")
    mapping = tq.MappingType.SYMMETRIC if q.symmetric else tq.MappingType.ASYMMETRIC
    weight_dtype = torch.int8 if q.scheme == "int8" else torch.int4
    return (tq.IntxWeightOnlyConfig(weight_dtype=weight_dtype, granularity=group, mapping_type=mapping),
            "torchao IntxUnpackedToInt8Tensor (dequantize + matmul)")


def quantize_model(model, q: QuantScheme, device: str, dtype: torch.dtype,
                   int4_kernel: str = "tinygemm") -> dict[str, Any]:
    """Quantize ``model``'s decoder linears in place; returns the facts to record (kernel path, torchao version)."""
    if not q.enabled:
        return {}
    tq = import_torchao()
    config, kernel = choose_config(q, device, dtype, int4_kernel)

    def decoder_linear(module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and is_quantized_param(f"{fqn}.weight")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.quantize_(model, config, filter_fn=decoder_linear)
    import torchao

    return {"quant_kernel": kernel, "torchao_version": torchao.__version__}
