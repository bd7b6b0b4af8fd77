"""The int4 kernels that can be measured side by side: ``backend.int4_kernel`` on the HF backend (torchao's
layouts and gemlite) and ``backend.nbits_accuracy_level`` / ``nbits_kernel`` on ONNX Runtime (MatMulNBits). The
kernels themselves need a GPU; here: what is refused and why, and MatMulNBits' accuracy level on the CPU EP."""
from __future__ import annotations

import os

import pytest
import torch

from harness.errors import UserError
from harness.model.quant import resolve
from helpers import open_backend, tiny_model_cfg

pytest.importorskip("torchao", reason="torchao not installed (pip install torchao)")
HF = "hf-flashattn-staticcache"


def tiny_config():
    from harness.model.sources import ModelSource

    return ModelSource.from_config(tiny_model_cfg(), 0).config()


@pytest.mark.parametrize("scheme, kernel, device, needle", [
    ("int8", "mslk", "cuda:0", "applies to quant=int4 only"),
    ("int4", "gemlite", "cpu", "runs on CUDA in float16 only"),
    ("int4", "mslk", "cpu", "runs on CUDA in bfloat16 only"),
])
def test_an_int4_kernel_that_cannot_serve_the_scheme_is_refused(registry, scheme, kernel, device, needle):
    quant = resolve(scheme, None, None, tiny_config())
    with pytest.raises(UserError, match=needle):
        registry.check_quant(HF, quant, {"int4_kernel": kernel}, device)


@pytest.mark.parametrize("kernel, dtype, needle", [("gemlite", torch.bfloat16, "float16"),
                                                   ("mslk", torch.float16, "bfloat16")])
def test_an_int4_kernel_in_another_dtype_is_refused_with_the_one_it_takes(kernel, dtype, needle):
    from backends.hf_staticcache.quantize import check_int4_kernel

    quant = resolve("int4", None, None, tiny_config())
    with pytest.raises(UserError, match=f"runs on CUDA in {needle} only") as err:
        check_int4_kernel(kernel, quant, "cuda:0", dtype)
    assert err.value.fix == f"use device=cuda model.dtype={needle}, or backend.int4_kernel=tinygemm"


def test_a_symmetric_scheme_is_refused_by_the_zero_point_kernels(registry):
    quant = resolve("int4", None, True, tiny_config())
    with pytest.raises(UserError, match="zero point per group"):
        registry.check_quant(HF, quant, {"int4_kernel": "mslk_preshuffled"}, "cuda:0")


@pytest.mark.parametrize("kernel, package", [("mslk", "mslk"), ("gemlite", "gemlite")])
def test_a_missing_kernel_package_is_named_with_its_install(registry, kernel, package):
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    quant = resolve("int4", None, None, tiny_config())
    with pytest.raises(UserError, match=f"needs the {package} package") as err:
        registry.check_quant(HF, quant, {"int4_kernel": kernel}, "cuda:0")
    assert err.value.fix == f"pip install {package}"


@pytest.mark.parametrize("gemlite, torchao, clash", [("0.6.0.post2", "0.18.0", True), ("0.6.0", "0.18.0+cu130", True),
                                                      ("0.5.1.post1", "0.18.0", False), ("0.6.0", "0.19.0", False)])
def test_a_gemlite_that_torchao_cannot_read_is_named(gemlite, torchao, clash):
    from backends.hf_staticcache.quantize import gemlite_mismatch

    why = gemlite_mismatch(gemlite, torchao)
    assert (why is not None) == clash
    if clash:
        assert f"gemlite {gemlite}" in why and f"torchao {torchao}" in why


def test_int4_kernel_without_int4_is_refused_at_load(registry):
    with pytest.raises(UserError, match="applies to quant=int4 only"):
        open_backend(registry, HF, options={"int4_kernel": "gemlite"})


def test_fpa_intb_switch_is_set_for_the_session_and_put_back():
    from backends.onnxruntime_backend.plugin import FPA_INTB_ENV, nbits_kernel_env

    before = os.environ.pop(FPA_INTB_ENV, None)
    try:
        with nbits_kernel_env("fpa_intb"):
            assert os.environ[FPA_INTB_ENV] == "1"
        assert FPA_INTB_ENV not in os.environ
        with nbits_kernel_env("default"):
            assert FPA_INTB_ENV not in os.environ
    finally:
        if before is not None:
            os.environ[FPA_INTB_ENV] = before


def test_nbits_options_without_quant_are_refused(registry):
    pytest.importorskip("onnxruntime")
    with pytest.raises(UserError, match="apply to quant=int8"):
        open_backend(registry, "onnxruntime", options={"nbits_accuracy_level": 4})


@pytest.mark.slow
def test_matmulnbits_accuracy_level_is_a_graph_attribute_with_its_own_artifact(registry, tmp_path):
    """accuracy_level=4 (int8 activations on the CPU EP) is written into every MatMulNBits node, cached apart from
    the default, and still validates against the float32 model within the scheme's drift."""
    pytest.importorskip("onnxruntime")
    import onnx

    from harness.accuracy.validate import validate_backend

    quant = resolve("int4", 32, None, tiny_config())
    levels = {}
    for level in (0, 4):
        handle, source, info = open_backend(registry, "onnxruntime", max_seq=32, quant=quant, tmp_cache=tmp_path,
                                            options={"nbits_accuracy_level": level})
        try:
            assert info["nbits_accuracy_level"] == level
            graph = onnx.load(os.path.join(info["onnx_dir"], "model.onnx"), load_external_data=False).graph
            levels[level] = {a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute
                             if a.name == "accuracy_level"} or {0}
            results = validate_backend(handle, source, torch.float32, "cpu", 2, 8, 4, 0, quant)
        finally:
            handle.close()
        assert all(r.passed for r in results), [r.reason for r in results]
    assert levels == {0: {0}, 4: {4}}
    assert len(list((tmp_path / "onnx-quant").glob("*/manifest.json"))) == 2
