"""GPU checks (``pytest -m gpu`` on a CUDA machine): every backend that runs on CUDA validates and benchmarks the
tiny model there; skipped with the reason elsewhere."""
import pandas as pd
import pytest
import torch

from harness.accuracy.inputs import left_pad, random_prompt_ids
from helpers import FAST, open_backend, run_cli

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("extra", [
    ["backend=hf-flashattn-staticcache"],
    ["backend=hf-flashattn-staticcache", "backend.compile=reduce-overhead"],
    ["backend=hf-flashattn-staticcache", "backend.attention=torch_flash", "backend.compile=reduce-overhead"],
    ["backend=hf-flashattn-staticcache", "backend.attention=torch_flash", "backend.cuda_graph=true"],
    ["backend=hf-flashattn-staticcache", "backend.attention=flash_attention_4", "backend.compile=reduce-overhead"],
    ["backend=hf-flashattn-staticcache", "backend.attention=flash_attention_4", "backend.cuda_graph=true"],
    ["backend=hf-flashattn-staticcache", "backend.compile=max-autotune", "backend.cuda_graph=true"],
    ["backend=onnxruntime"],
    ["backend=onnxruntime", "backend.attention=gqa"],
    ["backend=onnxruntime", "backend.attention=gqa", "backend.cuda_graph=true"],
    ["backend=onnxruntime", "backend.attention=gqa", "backend.fused_ops=true", "backend.cuda_graph=true"],
])
def test_backend_on_cuda(extra, tmp_path):
    _run_and_check(extra, tmp_path)


@pytest.mark.parametrize("extra", [  # weight-only quantization on the GPU paths (docs/quantization.md)
    ["backend=hf-flashattn-staticcache", "backend.compile=reduce-overhead", "quant=int8"],
    ["backend=hf-flashattn-staticcache", "backend.compile=reduce-overhead", "quant=int4",
     "quant_options.group_size=32"],  # tinygemm (bf16, asymmetric, group 32..256)
    ["backend=hf-flashattn-staticcache", "quant=fp8"],
    ["backend=onnxruntime", "backend.attention=gqa", "backend.fused_ops=true", "backend.cuda_graph=true",
     "quant=int4"],
    ["backend=onnxruntime", "backend.attention=gqa", "backend.cuda_graph=true", "quant=int8"],
])
def test_quantized_backend_on_cuda(extra, tmp_path):
    pytest.importorskip("torchao", reason="torchao not installed (pip install torchao)")
    tidy = _run_and_check(extra, tmp_path)
    assert (tidy.quant != "none").all() and (tidy.accuracy_max_abs_diff > 0).all()


def _run_and_check(extra, tmp_path):
    for choice in FLASH:
        if f"backend.attention={choice}" in extra:
            _skip_unless_runs(choice)
    proc = run_cli(*extra, *FAST, "device=cuda", f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tidy = pd.read_csv(tmp_path / "results.csv")
    assert set(tidy.status) == {"ok"} and set(tidy.validation) == {"pass"}, tidy[["status", "error"]]
    assert "gpu_device_used_peak_mib" in set(tidy.metric) and "torch_allocated_peak_mib" in set(tidy.metric)
    return tidy


@pytest.mark.parametrize("fused_ops", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])  # ORT's CUDA GroupQueryAttention: no float32
def test_ort_cuda_graph_replays_match_plain_runs(registry, dtype, fused_ops, tmp_path):
    """Replayed decode graphs must compute what uncaptured runs compute, step after step, ragged rows, two batch
    sizes (one graph each) and a reset in between: a stale per-step input would show up as a divergence."""
    logits = {}
    for graph in (False, True):
        handle, source, info = open_backend(registry, "onnxruntime", options={"attention": "gqa", "cuda_graph": graph,
                                                                           "fused_ops": fused_ops},
                                            dtype=dtype, device="cuda", max_seq=48, tmp_cache=tmp_path)
        try:
            assert info["cuda_graph"] is graph
            for lens in ((9, 4, 6), (5, 5), (9, 4, 6)):
                handle.reset_kv()
                rows = [random_prompt_ids(source.config(), 1, n, seed=n)[0] for n in lens]
                ids, plens = left_pad(rows)
                out = handle.prefill(input_ids=ids.cuda(), prompt_lens=plens.cuda())
                steps = []
                for _ in range(12):
                    steps.append(out.float().cpu())
                    out = handle.decode_step(tokens=out.argmax(-1, keepdim=True))
                logits.setdefault(graph, []).append(torch.stack(steps))
        finally:
            handle.close()
    for replayed, plain in zip(logits[True], logits[False]):
        per_step = (replayed - plain).abs().amax(dim=(1, 2)).tolist()  # [steps]
        assert max(per_step) < 1e-3, f"replayed vs plain max |diff| per step: {per_step}"


FLASH = ["torch_flash", "flash_attention_4", "flash_attention_2"]
HEAD64 = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2}


def _skip_unless_runs(choice):
    from backends.hf_staticcache.selection import flash_problem

    if problem := flash_problem(choice, "cuda", torch.bfloat16):
        pytest.skip(f"{choice}: {problem}")


def _ragged_logits(registry, options, steps=12):
    """Logits of prefill + decode steps over ragged left-padded batches (two batch sizes, a reset in between, a
    prompt longer than one 128-key tile), tokens fixed in advance so that every backend sees the same inputs."""
    from helpers import tiny_model_cfg

    handle, source, info = open_backend(registry, "hf-flashattn-staticcache", model_cfg=tiny_model_cfg(**HEAD64),
                                        options=options, dtype=torch.bfloat16, device="cuda", max_seq=192)
    out = []
    try:
        for lens in ((150, 9, 33), (5, 5), (150, 9, 33)):
            handle.reset_kv()
            rows = [random_prompt_ids(source.config(), 1, n, seed=n)[0] for n in lens]
            ids, plens = left_pad(rows)
            logits = [handle.prefill(input_ids=ids.cuda(), prompt_lens=plens.cuda()).float().cpu()]
            for step in range(steps):
                tokens = torch.full((len(lens), 1), 7 + step, device="cuda")
                logits.append(handle.decode_step(tokens=tokens).float().cpu())
            out.append(torch.stack(logits))  # [1 + steps, B, V]
    finally:
        handle.close()
    return out, info


@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("choice", FLASH)
def test_flash_choice_matches_sdpa_math_on_ragged_batches(registry, choice, cuda_graph):
    """Each FlashAttention choice (prefill, decode, and hand-captured CUDA-graph replays) against SDPA's math
    kernel over the masked cache, bf16: relative error per step of the logits."""
    _skip_unless_runs(choice)
    want, _ = _ragged_logits(registry, {"attention": "math"})
    got, info = _ragged_logits(registry, {"attention": choice, "cuda_graph": cuda_graph})
    assert info["attention_kernel_prefill"] == info["attention_kernel_decode"] == choice
    for g, w in zip(got, want):
        rel = ((g - w).flatten(1).norm(dim=1) / w.flatten(1).norm(dim=1)).tolist()  # per step
        assert not torch.isnan(g).any() and max(rel) < 2e-2, f"{choice} vs SDPA-math, relative error per step: {rel}"


@pytest.mark.parametrize("choice", ["sdpa", *FLASH])
def test_compiled_step_captured_by_hand_matches_eager(registry, choice):
    """compile=default + cuda_graph=true: Inductor's step captured with its counters as one graph must compute
    what the eager step computes, over ragged rows, two batch sizes and a reset (stale counters would diverge)."""
    if choice != "sdpa":
        _skip_unless_runs(choice)
    want, _ = _ragged_logits(registry, {"attention": choice})
    got, info = _ragged_logits(registry, {"attention": choice, "compile": "default", "cuda_graph": True})
    assert info["decode_graph"] == "captured by the backend"
    for g, w in zip(got, want):
        rel = ((g - w).flatten(1).norm(dim=1) / w.flatten(1).norm(dim=1)).tolist()  # per step
        assert not torch.isnan(g).any() and max(rel) < 2e-2, f"{choice} compiled + captured vs eager: {rel}"


@pytest.mark.parametrize("choice", FLASH)
def test_flash_decode_step_compiles_without_graph_break(registry, choice):
    _skip_unless_runs(choice)
    from helpers import tiny_model_cfg

    handle, source, _ = open_backend(registry, "hf-flashattn-staticcache", model_cfg=tiny_model_cfg(**HEAD64),
                                     options={"attention": choice}, dtype=torch.bfloat16, device="cuda", max_seq=64)
    try:
        backend = handle.instance
        handle.prefill(input_ids=random_prompt_ids(source.config(), 2, 9, seed=1).cuda(), prompt_lens=None)
        backend.fill.advance()
        with torch.no_grad():
            explained = torch._dynamo.explain(backend._forward_decode)(
                torch.tensor([[1], [2]], device="cuda"), backend.step_pos, None)
        print(f"{choice}: graph breaks {explained.graph_break_count}, graphs {explained.graph_count}")
        assert explained.graph_break_count == 0, explained.break_reasons
    finally:
        handle.close()


def test_auto_picks_the_first_flash_choice_that_runs(registry):
    from backends.hf_staticcache.selection import FLASH_CHOICES, flash_problem

    runnable = [c for c in FLASH_CHOICES if flash_problem(c, "cuda", torch.bfloat16) is None]
    handle, _, info = open_backend(registry, "hf-flashattn-staticcache", dtype=torch.bfloat16, device="cuda")
    handle.close()
    print("auto:", info)
    if runnable:
        assert info["attention_kernel_decode"] == runnable[0]
        assert list(info.get("attention_skipped", {})) == list(FLASH_CHOICES[:FLASH_CHOICES.index(runnable[0])])


def test_machine_state_reads_the_gpu():
    """NVML readings of the job's GPU: clocks, power, temperature, throttle reasons, persistence, other processes."""
    import time

    from harness.measure.machine_state import MachineWatch, snapshot, warnings_for

    state = snapshot("cuda:0")
    for key in ("gpu_sm_clock_mhz", "gpu_sm_clock_max_mhz", "gpu_power_w", "gpu_temperature_c",
                "gpu_throttle_reasons", "gpu_persistence_mode", "gpu_other_processes"):
        assert key in state, key
    with MachineWatch("cuda:0") as watch:
        x = torch.randn(4096, 4096, device="cuda")
        for _ in range(50):
            x = x @ x / 64
        torch.cuda.synchronize()
        time.sleep(0.1)
    assert watch.state["gpu_sm_clock_mhz"] > 0 and "gpu_power_violation_ms" in watch.state
    assert isinstance(warnings_for(watch.state), list)
