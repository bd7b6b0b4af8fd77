"""trt-onnx-parsed's quantized graph (backends/onnx_export/qdq.py): the Q/DQ ONNX run by ONNX Runtime equals the
float32 model with the scheme's weights (harness/model/quant.py), TensorRT-RTX builds an engine from it for each scheme
the backend accepts, and the schemes its parser refuses are refused before any work."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.errors import UserError
from harness.model.quant import QuantScheme, quantized_reference, resolve
from helpers import installed_tensorrt, run_cli, tiny_model_cfg

# the schemes trt-onnx-parsed accepts (symmetric): int8 / int4 per block and per output channel, fp8 per channel
ACCEPTED = [("int8", None), ("int8", 0), ("int4", 32), ("int4", 0), ("fp8", None)]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The tiny model's float32 ONNX export (unchecked: these tests compare it themselves), cached once."""
    from backends.onnx_export.artifact import onnx_artifact
    from harness.model.sources import ModelSource
    from harness.plugin.loadspec import LoadSpec

    source = ModelSource.from_config(tiny_model_cfg(), 0)
    spec = LoadSpec(model=source, dtype=torch.float32, device="cpu", options={}, max_batch=2, max_seq=32,
                    cache_dir=tmp_path_factory.mktemp("qdq-cache"))
    return spec, onnx_artifact(spec)


def ort_logits(onnx_path: Path, config, rows, tokens: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime (CPU) logits [B, steps, V]: prefill of the left-padded rows, then decode of ``tokens``.
    Basic graph optimizations only: from the extended level on, ORT fuses DequantizeLinear + MatMul into its own
    MatMulNBits with int8 activations on the CPU (drift ~4e-3 here), which would hide what the graph says."""
    from backends.onnxruntime_backend.runner import OrtStaticCacheRunner
    from harness.sdk import left_pad

    ids, lens = left_pad(rows)
    runner = OrtStaticCacheRunner(str(onnx_path), config, torch.float32, "cpu", len(rows), opt_level="basic")
    logits = [runner.prefill(ids, lens).float()]
    for k in range(tokens.shape[1] - 1):
        logits.append(runner.decode(tokens[:, k:k + 1]).float())
    return torch.stack(logits, 1)


@pytest.mark.slow
@pytest.mark.parametrize("scheme,group", ACCEPTED)
def test_qdq_graph_equals_the_fake_quantized_model(export, scheme, group):
    pytest.importorskip("onnxruntime")
    from backends.onnx_export.qdq import qdq_onnx_artifact
    from harness.sdk import random_prompt_ids, reference_greedy

    spec, source = export
    config = spec.hf_config
    quant = resolve(scheme, group, True, config)
    artifact = qdq_onnx_artifact(spec, source, quant)
    assert artifact.meta["dequantize_nodes"] == 7 * config.num_hidden_layers  # every decoder linear, not lm_head
    rows = [random_prompt_ids(config, 1, n, seed=n)[0] for n in (6, 3)]
    reference = quantized_reference(spec.model.build(torch.float32, "cpu"), quant)  # a fresh copy, changed
    tokens, expected = reference_greedy(reference, rows, 4)
    got = ort_logits(artifact.directory / "model.onnx", config, rows, tokens)
    _, unquantized = reference_greedy(spec.model.build_fp32_cpu(), rows, 4)
    drift = (got - unquantized).abs().max().item()
    assert (got - expected).abs().max().item() < 1e-5, quant.label  # measured: 2e-7
    assert drift > 1e-3  # the weights really are quantized
    assert qdq_onnx_artifact(spec, source, quant).reused  # cached under its own key


trt = installed_tensorrt()


@pytest.mark.slow
@pytest.mark.skipif(trt is None, reason="neither tensorrt nor tensorrt_rtx_bindings installed")
@pytest.mark.parametrize("scheme,group", ACCEPTED)
def test_trt_onnx_parsed_quantized_engine_builds(scheme, group, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "qdq-engine-cache"  # one export for every scheme
    out = tmp_path_factory.mktemp("out")
    group_arg = [] if group is None else [f"quant_options.group_size={group}"]
    result = run_cli("task=build", "backend=trt-onnx-parsed", "device=cpu", f"quant={scheme}",
                     "quant_options.symmetric=true", *group_arg, "grid.batch_sizes=[1]", "grid.prompt_lens=[8]",
                     "grid.new_tokens=2", f"cache_dir={cache}", f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{scheme} initializers + DequantizeLinear (ONNX Q/DQ)" in (out / "run.json").read_text()
    label = QuantScheme(scheme, (0 if scheme == "fp8" else 64) if group is None else group, True).label
    assert f"({label}, Q/DQ)" in result.stderr + result.stdout
    assert list((cache / "trt-onnx-parsed").glob("*/model.engine"))


def test_hook_accepts_symmetric_schemes_only(registry):
    from harness.model.sources import ModelSource

    config = ModelSource.from_config(tiny_model_cfg(), 0).config()
    for scheme, group in ACCEPTED:
        registry.check_quant("trt-onnx-parsed", resolve(scheme, group, True, config), {}, "cpu")
    with pytest.raises(UserError, match="zero point"):
        registry.check_quant("trt-onnx-parsed", resolve("int4", None, None, config), {}, "cpu")  # asym default
    with pytest.raises(UserError, match="zero point"):
        registry.check_quant("trt-onnx-parsed", resolve("int8", 0, False, config), {}, "cpu")
