"""Weight-only quantization: the scheme's maths (hand-derived), the byte count, the accuracy metrics, each backend's
quantized path against the float32 model (torchao, ONNX Runtime's MatMulNBits, TensorRT Q/DQ through the reference
evaluator and a TensorRT-RTX build; trt-onnx-parsed's Q/DQ graph in test_quant_qdq.py), the up-front refusals and
the report's speed-vs-accuracy output."""
import math

import pytest
import torch

from harness.accuracy.numerics import (
    backend_perplexity,
    greedy_agreement,
    kl_divergence,
    logit_drift,
    reference_perplexity,
)
from harness.accuracy.validate import compare, validate_backend
from harness.errors import UserError
from harness.model.quant import QuantScheme, dequantize_weight, fake_quantize, quantize_weight, resolve, weight_bytes
from helpers import FAST, installed_tensorrt, open_backend, run_cli, tiny_model_cfg

torchao = pytest.importorskip("torchao", reason="torchao not installed (pip install torchao)")


def tiny_config():
    from harness.model.sources import ModelSource

    return ModelSource.from_config(tiny_model_cfg(), 0).config()


# --- the scheme -------------------------------------------------------------------------------------------------

def test_int8_symmetric_codes_and_scale_by_hand():
    w = torch.tensor([[1.0, -0.5, 0.25, 2.0]])
    codes, scale, zero = quantize_weight(w, QuantScheme("int8", 0, True))
    assert zero is None
    assert scale.item() == pytest.approx(2.0 / 127.5)  # max|w| over half the 255 steps
    # 1/s = 63.75 -> 64; -0.5 -> -31.875 -> -32; 0.25 -> 15.9375 -> 16; 2 -> 127.5 -> clamped to 127
    assert codes.tolist() == [[64, -32, 16, 127]]
    s = 2 / 127.5
    assert dequantize_weight(codes, scale, zero, 0).tolist()[0] == pytest.approx([64 * s, -32 * s, 16 * s, 127 * s])


def test_int4_asymmetric_groups_by_hand():
    # two groups of 2 columns: [0, 1.5] and [-3, 0]
    w = torch.tensor([[0.0, 1.5, -3.0, 0.0]])
    codes, scale, zero = quantize_weight(w, QuantScheme("int4", 2, False))
    assert scale.tolist() == [[pytest.approx(0.1), pytest.approx(0.2)]]  # (max - min) / 15
    # zero points 0 and 15 (stored shifted by -8); codes 0, 15 and 0, 15 (shifted by -8)
    assert (zero + 8).tolist() == [[0, 15]]
    assert (codes.int() + 8).tolist() == [[0, 15, 0, 15]]
    assert fake_quantize(w, QuantScheme("int4", 2, False)).tolist() == [[0.0, pytest.approx(1.5), pytest.approx(-3.0),
                                                                         0.0]]


def test_fp8_scales_per_channel_to_448():
    w = torch.tensor([[448.0, 1.0], [0.5, -0.25]])
    codes, scale, _ = quantize_weight(w, QuantScheme("fp8", 0, True))
    assert codes.dtype == torch.float8_e4m3fn
    assert scale.flatten().tolist() == [pytest.approx(1.0), pytest.approx(0.5 / 448)]
    assert codes.float()[1].tolist() == [448.0, -224.0]


def test_quantization_error_shrinks_with_bits_and_groups():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    err = {q: float((fake_quantize(w, q) - w).abs().mean()) for q in
           (QuantScheme("int8", 0, True), QuantScheme("int4", 0, True), QuantScheme("int4", 32, True))}
    int8, int4_pc, int4_g32 = err.values()
    assert int8 < int4_g32 < int4_pc


def test_resolve_defaults_and_refusals():
    config = tiny_config()  # hidden 64, intermediate 128: 128 does not divide 64, so the default halves to 64
    assert resolve("int4", None, None, config) == QuantScheme("int4", 64, False)
    assert resolve("int8", None, None, config) == QuantScheme("int8", 64, True)
    assert resolve("fp8", None, None, config) == QuantScheme("fp8", 0, True)
    assert resolve("int8", 0, None, config).label == "int8-pc"
    assert resolve("int4", 32, False, config).label == "int4-g32-asym"
    for bad in (("int3", None, None), ("int4", 48, None), ("int4", 256, None), ("fp8", 32, None)):
        with pytest.raises(UserError):
            resolve(*bad, config)


def test_weight_bytes_by_hand():
    config = tiny_config()  # 2 layers; per layer q 64x64, k/v 32x64, o 64x64, gate/up 128x64, down 64x128
    linears = 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 2 * 128 * 64 + 64 * 128)  # 73728
    from harness.model.sources import param_count

    other = param_count(config)["matmul"] - linears
    assert weight_bytes(config, QuantScheme(), 2) == param_count(config)["matmul"] * 2
    # int4 g64 asym: half a byte per weight + (scale + zero) 2 + 2 bytes per 64 weights
    assert weight_bytes(config, QuantScheme("int4", 64, False), 2) == pytest.approx(
        linears / 2 + linears / 64 * 4 + other * 2)
    # int8 per channel: one 2-byte scale per output row
    rows = 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
    assert weight_bytes(config, QuantScheme("int8", 0, True), 2) == pytest.approx(linears + rows * 2 + other * 2)


# --- accuracy metrics -------------------------------------------------------------------------------------------

def test_kl_and_drift_by_hand():
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    got = torch.log(torch.tensor([[0.25, 0.75]]))
    assert kl_divergence(ref, got) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75))
    assert kl_divergence(ref, ref) == 0.0
    drift = logit_drift(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.5, 1.0]]))
    assert drift["max_abs_diff"] == 1.0 and drift["mean_abs_diff"] == 0.75 and drift["top1_agreement"] == 0.0
    assert math.isnan(logit_drift(ref, torch.tensor([[float("nan"), 0.0]]))["kl_divergence"])
    assert greedy_agreement(torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 9, 4]])) == 0.5


def test_quantized_drift_is_held_to_the_scheme_cost_in_hf():
    ref = torch.zeros(1, 4, 8)
    scheme = ref + 0.1  # the same scheme in HF drifts by 0.1
    tokens = torch.zeros(1, 4, dtype=torch.long)
    q = QuantScheme("int8", 64, True)
    ok = compare("c", tokens, ref, ref + 0.15, tokens, torch.float32, q, scheme)
    bad = compare("c", tokens, ref, ref + 0.5, tokens, torch.float32, q, scheme)
    assert ok.passed and ok.scheme_max_abs_diff == pytest.approx(0.1)
    assert not bad.passed and "max |Δlogit|" in bad.reason


# --- backends -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["int8", pytest.param("int4", marks=pytest.mark.slow),
                                    pytest.param("fp8", marks=pytest.mark.slow)])
def test_hf_torchao_quantized_validates_and_drifts(registry, scheme):
    quant = resolve(scheme, None, None, tiny_config())
    handle, source, info = open_backend(registry, "hf-flashattn-staticcache", max_seq=32, quant=quant)
    try:
        assert info["quant_kernel"].startswith("torchao")
        results = validate_backend(handle, source, torch.float32, "cpu", 2, 8, 6, 0, quant)
    finally:
        handle.close()
    assert all(r.passed for r in results), [r.reason for r in results]
    assert all(r.max_abs_diff > 1e-4 for r in results)  # the weights really are quantized
    assert all(r.kl_divergence > 0 and r.quant == quant.label for r in results)


def test_backend_perplexity_matches_the_reference(registry):
    handle, source, _ = open_backend(registry, "hf-flashattn-staticcache", max_seq=32)
    try:
        ids = torch.randint(3, 500, (1, 20), generator=torch.Generator().manual_seed(1))
        ours = backend_perplexity(handle, ids, "cpu")
    finally:
        handle.close()
    assert ours == pytest.approx(reference_perplexity(source.build_fp32_cpu(), ids), rel=1e-4)


@pytest.mark.slow
def test_ort_matmulnbits_artifact_validates_and_is_cached(registry, tmp_path):
    pytest.importorskip("onnxruntime")
    config = tiny_config()
    quant = resolve("int4", 32, None, config)
    for attempt in range(2):
        handle, source, info = open_backend(registry, "onnxruntime", max_seq=32, quant=quant, tmp_cache=tmp_path,
                                            options={"attention": "gqa", "fused_ops": True})
        try:
            assert info["quant_kernel"] == "MatMulNBits" and info["onnx_quant_reused"] == (attempt == 1)
            assert info["onnx_matmulnbits_nodes"] == 2 * 4  # per layer: qkv, o, gate/up, down; lm_head excluded
            results = validate_backend(handle, source, torch.float32, "cpu", 2, 8, 6, 0, quant)
        finally:
            handle.close()
        assert all(r.passed for r in results), [r.reason for r in results]
        assert all(r.max_abs_diff > 1e-3 for r in results)
    assert len(list((tmp_path / "onnx-quant").glob("*/manifest.json"))) == 1


# --- TensorRT: Q/DQ semantics in the evaluator, the hand-built network, an RTX build ------------------------------

trt = installed_tensorrt()
needs_trt = pytest.mark.skipif(trt is None, reason="neither tensorrt nor tensorrt_rtx_bindings installed")


@needs_trt
def test_evaluator_dequantize_per_channel_and_block_by_hand():
    import numpy as np

    from backends.trt_common.evaluator import NetworkEvaluator

    net = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_network(
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    codes = np.array([[[1, -2, 3, -4], [5, 6, -7, 8]]], dtype=np.int8)  # [1, 2, 4]
    keep = [codes, np.array([2.0, 0.5], np.float32), np.array([[[1.0, 10.0], [-1.0, 0.25]]], np.float32)]
    c = net.add_constant((1, 2, 4), trt.Weights(keep[0])).get_output(0)
    per_channel = net.add_dequantize(c, net.add_constant((2,), trt.Weights(keep[1])).get_output(0), trt.float32)
    per_channel.axis = 1
    block = net.add_dequantize(c, net.add_constant((1, 2, 2), trt.Weights(keep[2])).get_output(0), trt.float32)
    block.axis = 2
    unit = net.add_constant((), trt.Weights(np.array(1.0, np.float32))).get_output(0)
    requant = net.add_quantize(block.get_output(0), unit, trt.int8)
    for layer, name in ((per_channel, "pc"), (block, "block"), (requant, "requant")):
        layer.get_output(0).name = name
        net.mark_output(layer.get_output(0))
    out = NetworkEvaluator(trt, net).run({})
    assert out["pc"].tolist() == [[[2, -4, 6, -8], [2.5, 3, -3.5, 4]]]
    assert out["block"].tolist() == [[[1, -2, 30, -40], [-5, -6, -1.75, 2]]]
    assert out["requant"].tolist() == [[[1, -2, 30, -40], [-5, -6, -2, 2]]]  # -1.75 rounds to -2


@needs_trt
@pytest.mark.parametrize("scheme,group", [("int8", None), pytest.param("int8", 0, marks=pytest.mark.slow),
                                          pytest.param("fp8", None, marks=pytest.mark.slow)])
def test_trt_handbuilt_quantized_network_matches_the_scheme(registry, scheme, group):
    """The network's Q/DQ weights through the evaluator = the HF model with the scheme's weights (same scales)."""
    quant = resolve(scheme, group, None, tiny_config())
    handle, source, info = open_backend(registry, "trt-handbuilt", max_seq=32, quant=quant,
                                        options={"mode": "evaluator"})
    try:
        assert "DEQUANTIZE" in info["layer_types"]
        results = validate_backend(handle, source, torch.float32, "cpu", 2, 8, 6, 0, quant)
    finally:
        handle.close()
    for r in results:
        assert r.passed, r.reason
        assert r.max_abs_diff == pytest.approx(r.scheme_max_abs_diff, rel=0.05, abs=1e-4)


@needs_trt
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "fp8"])
def test_trt_handbuilt_quantized_engine_builds(scheme, tmp_path):
    result = run_cli("task=build", "backend=trt-handbuilt", "device=cpu", f"quant={scheme}", "backend.mode=engine",
                     "grid.batch_sizes=[1]", "grid.prompt_lens=[8]", "grid.new_tokens=2", f"cache_dir={tmp_path}",
                     f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "trt-handbuilt").glob("*/model.engine"))


# --- configuration and results ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (["-m", "backend=hf-flashattn-staticcache,trt-handbuilt", "quant=none,int4"], "trt-handbuilt builds int8"),
    (["backend=onnxruntime", "quant=fp8"], "no fp8"),
    pytest.param(["backend=onnxruntime", "quant=int8", "quant_options.group_size=0"], "per-channel",
                 marks=pytest.mark.slow),
    (["backend=trt-onnx-parsed", "quant=int4"], "zero point"),  # int4 defaults to asymmetric
    pytest.param(["-m", "backend=trt-onnx-parsed", "quant=int8,int4"], "zero point", marks=pytest.mark.slow),
    pytest.param(["quant=int5"], "unknown quant", marks=pytest.mark.slow),
    pytest.param(["quant=int4", "quant_options.group_size=24"], "power of two", marks=pytest.mark.slow),
])
def test_unsupported_schemes_are_refused_up_front(args, needle, tmp_path):
    result = run_cli(*args, "device=cpu", f"output_dir={tmp_path}", timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("enginebench: error")]
    assert len(lines) == 1 and needle in lines[0] and "fix:" in lines[0]
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.slow
def test_quant_sweep_rows_and_report(tmp_path):
    import pandas as pd

    # isolation=none: a multirun's jobs default to worker processes of their own (a fresh interpreter each, seconds
    # apiece); not what this checks (test_scaling.py and test_hostile_plugins.py run multiruns in them)
    result = run_cli("-m", "quant=none,int8", "device=cpu", *FAST, "isolation=none", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    tidy = pd.concat(pd.read_csv(f) for f in tmp_path.glob("*/results.csv"))
    assert set(tidy.quant) == {"none", "int8-g64"}
    quantized = tidy[tidy.quant == "int8-g64"]
    assert (quantized.accuracy_max_abs_diff > 1e-4).all() and (quantized.accuracy_kl > 0).all()
    comparison = pd.read_csv(tmp_path / "report" / "comparison.csv")
    assert (comparison["quant__hf-flashattn-staticcache[quant=int8-g64]"] == "int8-g64").all()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Speed vs accuracy" in report and "hf-flashattn-staticcache[quant=int8-g64]" in report
    assert list((tmp_path / "report" / "plots").glob("speed_vs_accuracy__*.png"))


def test_hook_check_quant_refuses_per_backend(registry):
    quant = resolve("int4", None, None, tiny_config())
    registry.check_quant("hf-flashattn-staticcache", quant, {}, "cpu")  # accepted
    with pytest.raises(UserError, match="int4"):
        registry.check_quant("trt-handbuilt", quant, {}, "cpu")
    registry.check_quant("trt-handbuilt", QuantScheme(), {}, "cpu")  # quant=none is never refused
