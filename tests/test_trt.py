"""TensorRT backends. Here (no GPU TensorRT can run on): engines build ahead of time with TensorRT-RTX on the CPU,
and the hand-built network's numerics are checked by the reference evaluator on every architecture variant.
Engine execution tests are marked ``trt_gpu`` and skip with the reason unless TensorRT can run here
(run them where it can: ``python -m pytest -m trt_gpu``)."""
import shutil

import pytest
import torch
from variants import VARIANTS, variant_params

from harness.accuracy.inputs import random_prompt_ids
from harness.accuracy.validate import validate_backend
from harness.errors import UserError
from helpers import installed_tensorrt, open_backend, run_cli

trt_module = installed_tensorrt()
needs_trt = pytest.mark.skipif(trt_module is None, reason="neither tensorrt nor tensorrt_rtx_bindings installed")


def trt_can_execute() -> tuple[bool, str]:
    if trt_module is None:
        return False, "no TensorRT module installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU: TensorRT engines execute on NVIDIA GPUs only"
    cc = torch.cuda.get_device_capability()
    if trt_module.__name__ == "tensorrt_rtx_bindings" and cc not in ((8, 0), (8, 6), (8, 9), (12, 0), (12, 1)):
        return False, f"TensorRT-RTX does not run on compute capability {cc[0]}.{cc[1]} (needs full TensorRT)"
    return True, ""


RUNNABLE, WHY_NOT = trt_can_execute()


@pytest.mark.slow
@needs_trt
@pytest.mark.parametrize("backend, extra", [("trt-onnx-parsed", []), ("trt-handbuilt", []),
                                            ("trt-handbuilt", ["backend.fuse_qkv=false"]),
                                            ("trt-handbuilt", ["backend.attention=fused"])])
def test_engine_builds_ahead_of_time(backend, extra, tmp_path):
    proc = run_cli(f"backend={backend}", "task=build", *extra, f"cache_dir={tmp_path}", f"output_dir={tmp_path}/o")
    assert proc.returncode == 0, proc.stderr[-3000:]
    engines = list((tmp_path / backend).glob("*/model.engine"))
    assert len(engines) == 1 and engines[0].stat().st_size > 0
    again = run_cli(f"backend={backend}", "task=build", *extra, f"cache_dir={tmp_path}", f"output_dir={tmp_path}/o2")
    assert "reusing cached artifact" in again.stderr


@needs_trt
@pytest.mark.parametrize("attention", ["explicit", "fused"])
@pytest.mark.parametrize("variant", variant_params())
def test_evaluator_matches_hf_for_variant(registry, variant, attention):
    handle, source, info = open_backend(registry, "trt-handbuilt", model_cfg=VARIANTS[variant], max_seq=32,
                                        options={"attention": attention})
    try:
        assert info["mode"] == "evaluator" and "KV_CACHE_UPDATE" in info["layer_types"]
        assert ("ATTENTION_INPUT" in info["layer_types"]) == (attention == "fused")
        results = validate_backend(handle, source, torch.float32, "cpu", batch=3, prompt_len=9, steps=6, seed=2)
        assert all(r.passed and r.greedy_agreement == 1.0 for r in results), results
    finally:
        handle.close()


@needs_trt
def test_evaluator_unfused_qkv_and_float16(registry):
    for options, dtype, tol in (({"fuse_qkv": False}, torch.float32, 1e-4), ({}, torch.float16, 2e-2),
                                ({"attention": "fused"}, torch.float16, 2e-2)):
        handle, source, _ = open_backend(registry, "trt-handbuilt", options=options, dtype=dtype, max_seq=32)
        try:
            ids = random_prompt_ids(source.config(), 2, 7, seed=3)
            ref = source.build_fp32_cpu()(input_ids=ids).logits[:, -1].detach()
            got = handle.prefill(input_ids=ids, prompt_lens=None)
            assert got.dtype == dtype and float((got.float() - ref).abs().max()) < tol
        finally:
            handle.close()


@needs_trt
def test_evaluator_reset_between_requests(registry):
    handle, source, _ = open_backend(registry, "trt-handbuilt", max_seq=32)
    try:
        ids = random_prompt_ids(source.config(), 2, 6, seed=4)
        first = [handle.prefill(input_ids=ids, prompt_lens=None)]
        first.append(handle.decode_step(tokens=torch.tensor([[7], [8]])))
        handle.reset_kv()
        other = random_prompt_ids(source.config(), 2, 10, seed=5)
        handle.prefill(input_ids=other, prompt_lens=None)  # a different request in between
        handle.reset_kv()
        again = [handle.prefill(input_ids=ids, prompt_lens=None), handle.decode_step(tokens=torch.tensor([[7], [8]]))]
        for a, b in zip(first, again):
            torch.testing.assert_close(a, b)
    finally:
        handle.close()


@needs_trt
def test_evaluator_rejects_unknown_layer_types():
    from backends.trt_common.evaluator import NetworkEvaluator, UnsupportedLayer

    trt = trt_module
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    x = net.add_input("x", trt.float32, (1, 8))
    top = net.add_topk(x, trt.TopKOperation.MAX, 2, 1 << 1)
    top.name = "my_topk"
    net.mark_output(top.get_output(0))
    with pytest.raises(UnsupportedLayer, match="my_topk"):
        NetworkEvaluator(trt, net).run({"x": torch.randn(1, 8)})


@needs_trt
@pytest.mark.parametrize("causal", ["NONE", "UPPER_LEFT", "LOWER_RIGHT"])
def test_evaluator_attention_layer_semantics(causal):
    """IAttention against a hand-written reference: GQA head mapping, bool mask, both causal alignments."""
    from backends.trt_common.evaluator import NetworkEvaluator

    trt = trt_module
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    net = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    shapes = {"q": (2, 4, 3, 8), "k": (2, 2, 5, 8), "v": (2, 2, 5, 8)}
    q, k, v = (net.add_input(n, trt.float32, shp) for n, shp in shapes.items())
    att = net.add_attention_v2(q, k, v, trt.AttentionNormalizationOp.SOFTMAX, getattr(trt.CausalMaskKind, causal))
    if causal == "NONE":  # a mask cannot be combined with a causal kind
        att.mask = net.add_input("mask", trt.bool, (2, 1, 3, 5))
    net.mark_output(att.get_output(0))
    torch.manual_seed(0)
    feeds = {n: torch.randn(shp) for n, shp in shapes.items()}
    keep = torch.rand(2, 1, 3, 5) > 0.3
    keep[..., 0] = True  # every query sees at least one key
    feeds["mask"] = keep
    got = NetworkEvaluator(trt, net).run(feeds)[att.get_output(0).name]
    expected = torch.empty(2, 4, 3, 8)
    for h in range(4):  # query head h reads K/V head h // 2
        scores = feeds["q"][:, h] @ feeds["k"][:, h // 2].transpose(-1, -2)  # [2, 3, 5]
        for i in range(3):
            for j in range(5):
                hidden = {"NONE": ~keep[:, 0, i, j], "UPPER_LEFT": torch.tensor(j > i).expand(2),
                          "LOWER_RIGHT": torch.tensor(j > i + 2).expand(2)}[causal]
                scores[hidden, i, j] = float("-inf")
        expected[:, h] = torch.softmax(scores, -1) @ feeds["v"][:, h // 2]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@needs_trt
def test_unknown_attention_is_one_line(registry):
    with pytest.raises(UserError, match="backend.attention=flash is not an option of backend trt-handbuilt"):
        open_backend(registry, "trt-handbuilt", options={"attention": "flash"}, max_seq=32)


@pytest.mark.slow
@needs_trt
def test_cli_validate_runs_the_evaluator(tmp_path):
    proc = run_cli("backend=trt-handbuilt", "task=validate", "device=cpu", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "validate trt-handbuilt [left_padded]: PASS" in proc.stderr
    import json

    # the rows are labelled as what ran on the CPU: the reference evaluator, not a TensorRT engine
    assert json.loads((tmp_path / "run.json").read_text())["configuration"] == "trt-handbuilt[mode=evaluator]"


def test_missing_tensorrt_is_one_line():
    import importlib.util

    from backends.trt_common.flavour import import_tensorrt

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("full TensorRT is installed here: nothing is missing")
    with pytest.raises(UserError) as err:
        import_tensorrt("tensorrt")  # asks for the flavour that is not installed
    assert err.value.problem == "no TensorRT module found (looked for tensorrt)"
    assert err.value.fix.startswith("pip install tensorrt-cu13")


# TinyLlama-1.1B's dimensions with two of its 22 layers: every layer is built by the same code, so two show that the
# builders take the real widths (2048 hidden, 32/4 heads, 5632 MLP, 32000 vocabulary) while the build stays under
# 2 GB of memory (all 22 layers need 12-16 GB and 2-3 minutes per engine here). In float32 that is 0.9 GB of
# weights: an engine holds one copy, the parsed backend's ONNX file another.
TINYLLAMA_LAYERS = 2
TINYLLAMA_WEIGHTS_GIB = 0.9
DISK_MARGIN_GIB = 1.5


@pytest.fixture
def scratch_dir(tmp_path):
    """A directory removed as soon as the test ends: multi-GB engines must not pile up for the rest of the run."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def require_free_disk(path, gib: float) -> None:
    free = shutil.disk_usage(path).free / 2**30
    if free < gib:
        pytest.skip(f"needs {gib:.1f} GiB free disk at {path} for TinyLlama-sized artifacts, has {free:.1f} GiB")


@needs_trt
@pytest.mark.slow
# the hand-built network's default attention at a real checkpoint's widths is built in test_smollm2.py
@pytest.mark.parametrize("backend, extra", [("trt-handbuilt", ["backend.attention=fused"]), ("trt-onnx-parsed", [])])
def test_tinyllama_engine_builds(backend, extra, scratch_dir):
    copies = 2 if backend == "trt-onnx-parsed" else 1  # ONNX file + engine | engine
    require_free_disk(scratch_dir, copies * TINYLLAMA_WEIGHTS_GIB + DISK_MARGIN_GIB)
    proc = run_cli(f"backend={backend}", *extra, "task=build", "model=tinyllama-1.1b",
                   f"model.hf_config.num_hidden_layers={TINYLLAMA_LAYERS}", "grid.batch_sizes=[1,8]",
                   "grid.prompt_lens=[128]", "grid.new_tokens=64", "validation.enabled=false",
                   f"cache_dir={scratch_dir}", f"output_dir={scratch_dir}/o", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((scratch_dir / backend).glob("*/model.engine"))


@pytest.mark.slow
@pytest.mark.trt_gpu
@pytest.mark.skipif(not RUNNABLE, reason=WHY_NOT or "TensorRT can run here")
@pytest.mark.parametrize("backend, extra", [("trt-onnx-parsed", []), ("trt-handbuilt", []),
                                            ("trt-handbuilt", ["backend.attention=fused"])])
def test_engine_executes_and_validates_on_gpu(backend, extra, tmp_path):
    proc = run_cli(f"backend={backend}", *extra, "device=cuda", "grid.batch_sizes=[1,2]", "grid.prompt_lens=[8]",
                   "grid.new_tokens=3", "measure.min_seconds=0", f"cache_dir={tmp_path}", f"output_dir={tmp_path}/o")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import pandas as pd

    tidy = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(tidy.status) == {"ok"} and set(tidy.validation) == {"pass"}
