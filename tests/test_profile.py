"""measure.profile and the attention-kernel label on the CPU: the category rule, the timeline split of a step into
busy, waiting and tail time (hand-built timelines), the explained share of a diff, the two optional profile hooks,
a profile that follows the timed iterations (never inside them) and leaves their samples alone (the decode and
prefill splits in results.csv), the report's step bars (busy, hatched waiting, tail), and its
"Where the time goes" section with ``enginebench-report why`` over an HF and an ONNX Runtime run."""
import gzip
import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

from harness import hookimpl
from harness.profile.categories import CATEGORIES, categorizer, default_category
from harness.profile.diff import diff_phase, explained_share, format_diff
from harness.profile.timeline import Span, split_step, split_steps, step_windows
from helpers import open_backend

ONE_CELL = ["grid.batch_sizes=[1]", "grid.prompt_lens=[8]", "grid.new_tokens=3", "measure.warmup=1",
            "measure.min_iters=5", "measure.min_seconds=0", "measure.overhead_steps=4", "validation.enabled=false"]


@pytest.mark.parametrize("name, category", [
    ("void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, "
     "cutlass::bfloat16_t>>", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x128_4x1x1_kernel0_0", "attention"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4>", "attention"),
    ("GroupQueryAttention", "attention"),
    ("nvjet_tst_128x64_64x8_1x1_v_bz_TNT", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x"
     "_cublas", "gemm"),
    ("MatMulNBits", "gemm"), ("aten::mm", "gemm"), ("aten::_weight_int4pack_mm", "gemm"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_1", "norm_elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>",
     "norm_elementwise"),
    ("SkipSimplifiedLayerNormalization", "norm_elementwise"), ("RotaryEmbedding", "norm_elementwise"),
    ("Memcpy DtoD (Device -> Device)", "copy"), ("Memset (Device)", "copy"), ("triton_poi_fused_index_copy_3", "copy"),
    ("aten::index_copy_", "copy"), ("ScatterND", "copy"), ("void onnxruntime::contrib::cuda::ConcatNewToPastKV<half>",
                                                           "copy"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>, unsigned int, "
     "long, 4, 4>>", "sampling"), ("aten::argmax", "sampling"),
    ("aten::view", "other"), ("aten::transpose", "other"), ("aten::arange", "other"), ("ncclDevKernel", "other"),
    # ONNX Runtime's CUDA kernels as CUPTI names them (the H200 profile in docs/results/h200/why)
    ("onnxruntime::contrib::cuda::H64::grp8_bf16::kernel_mha(unsigned int, unsigned int, float)", "attention"),
    ("void onnxruntime::cuda::_SplitSmallInnerKernel<int4>(onnxruntime::cuda::TArray<long, 4>)", "copy"),
])
def test_category_rule_sorts_known_kernel_names(name, category):
    assert default_category(name) == category


def _ms(**by_category) -> dict[str, float]:
    """A per-category dict (ms) with every category, zero where not given."""
    return {c: pytest.approx(by_category.get(c, 0.0), abs=1e-12) for c in CATEGORIES}


def _split_sums_to_wall(split) -> bool:
    total = sum(split.busy_ms.values()) + sum(split.wait_ms.values()) + split.tail_ms - split.overlap_ms
    return total == pytest.approx(split.wall_ms, abs=1e-12)


def test_split_step_charges_the_idle_time_before_each_kernel_to_it():
    """One stream, step 100..200 µs: gemm 110-130, attention 130-150 (back to back), copy 160-170.
    Waiting: gemm 10 µs (from the step's start), attention 0, copy 10 (from 150); tail 200 - 170 = 30."""
    spans = [Span("k_gemm", "gemm", 110, 130, 20), Span("k_attn", "attention", 130, 150, 20),
             Span("k_copy", "copy", 160, 170, 10)]
    split = split_step((100, 200), spans)
    assert split.wall_ms == pytest.approx(0.1)
    assert split.busy_ms == _ms(gemm=0.02, attention=0.02, copy=0.01)
    assert split.wait_ms == _ms(gemm=0.01, copy=0.01)
    assert split.tail_ms == pytest.approx(0.03) and split.overlap_ms == pytest.approx(0.0, abs=1e-12)
    assert _split_sums_to_wall(split)


def test_split_step_counts_overlapping_kernels_as_overlap():
    """Two streams, step 0..100: gemm 0-50 with attention 20-40 inside it, then copy 60-70. The attention kernel
    waited for nothing (the device was busy) and its 20 µs are counted twice: the overlap."""
    spans = [Span("k_attn", "attention", 20, 40, 20), Span("k_gemm", "gemm", 0, 50, 50),
             Span("k_copy", "copy", 60, 70, 10)]
    split = split_step((0, 100), spans)
    assert split.busy_ms == _ms(gemm=0.05, attention=0.02, copy=0.01)
    assert split.wait_ms == _ms(copy=0.01)
    assert split.tail_ms == pytest.approx(0.03) and split.overlap_ms == pytest.approx(0.02)
    assert _split_sums_to_wall(split)


def test_split_step_on_cpu_operators_waits_only_before_top_level_calls():
    """CPU operators, step 0..100: linear 10-60 (self 9) calls t 12-15 (self 3) and addmm 20-58 (self 38); then
    softmax 70-90 (self 20). Busy is self time; waiting is the host's time between top-level calls: 10 before
    linear (gemm), 10 before softmax (attention); tail 10. The self times partition the calls: no overlap."""
    spans = [Span("aten::linear", "gemm", 10, 60, 9), Span("aten::t", "other", 12, 15, 3, top_level=False),
             Span("aten::addmm", "gemm", 20, 58, 38, top_level=False),
             Span("aten::softmax", "attention", 70, 90, 20)]
    split = split_step((0, 100), spans)
    assert split.busy_ms == _ms(gemm=0.047, other=0.003, attention=0.02)
    assert split.wait_ms == _ms(gemm=0.01, attention=0.01)
    assert split.tail_ms == pytest.approx(0.01) and split.overlap_ms == pytest.approx(0.0, abs=1e-12)
    assert _split_sums_to_wall(split)


def test_split_step_kernel_past_the_step_end_makes_the_tail_negative():
    split = split_step((0, 100), [Span("k", "gemm", 90, 120, 30)])
    assert split.wait_ms == _ms(gemm=0.09) and split.tail_ms == pytest.approx(-0.02)
    assert _split_sums_to_wall(split)


def test_steps_end_where_the_next_one_starts_and_spans_go_to_the_step_they_start_in():
    """Marks 0-90 and 100-150 (given out of order): steps 0..100 and 100..150. Step 1: gemm 10-40 (wait 10,
    tail 60); step 2: copy 120-130 (wait 20, tail 20). Spans before the first step or after the last are no
    step's. The mean per step: wall 75 µs, gemm 15 busy + 5 waiting, copy 5 busy + 10 waiting, tail 40."""
    assert step_windows([(200, 250), (0, 90), (100, 180)]) == [(0, 100), (100, 200), (200, 250)]
    spans = [Span("early", "other", -20, -10, 10), Span("k_gemm", "gemm", 10, 40, 30),
             Span("k_copy", "copy", 120, 130, 10), Span("late", "other", 160, 170, 10)]
    split = split_steps([(100, 150), (0, 90)], spans)
    assert split.steps == 2 and split.wall_ms == pytest.approx(0.075)
    assert split.busy_ms == _ms(gemm=0.015, copy=0.005)
    assert split.wait_ms == _ms(gemm=0.005, copy=0.01)
    assert split.tail_ms == pytest.approx(0.04) and _split_sums_to_wall(split)
    assert split_steps([], spans) is None


def test_explained_share_is_one_minus_the_residual_over_the_difference():
    """The H200 batch-1 case (issue #29): step -0.11 ms, host gap +0.15 ms the other way. The busy categories sum to
    -0.26 ms, 236 % of the difference: they over-explain it, and the share says so by being 0 (the residual is
    larger than the difference). At batch 32: step -0.68, gap -0.20: 1 - 0.20 / 0.68."""
    assert explained_share(-0.11, 0.15) == 0.0
    assert explained_share(-0.68, -0.20) == pytest.approx(1 - 0.20 / 0.68)
    assert explained_share(-0.5, 0.05) == pytest.approx(0.9) == explained_share(-0.5, -0.05)  # over and under alike
    assert explained_share(0.0, 0.1) != explained_share(0.0, 0.1)  # NaN: no difference to explain


def _phase_summary(wall, busy, gap_wait, tail, profiled_wall) -> dict:
    return {"wall_ms_per_step": wall, "busy_ms_per_step": sum(busy.values()), "host_gap_ms_per_step":
            wall - sum(busy.values()), "kernels_per_step": 10.0, "category_ms_per_step": _full(busy), "kernels": [],
            "timeline": {"steps": 2, "wall_ms_per_step": profiled_wall, "busy_ms_per_step": _full(busy),
                         "wait_ms_per_step": _full(gap_wait), "tail_ms_per_step": tail, "overlap_ms_per_step": 0.0}}


def _full(by_category: dict) -> dict[str, float]:
    return {c: by_category.get(c, 0.0) for c in CATEGORIES}


def test_diff_explains_the_step_difference_by_busy_and_by_busy_plus_waiting():
    """A: timed step 2.0 ms, busy gemm 1.0 + copy 0.2, waiting gemm 0.5 + copy 0.3, tail 0.1 (profiled 2.1).
    B: timed 1.5, busy gemm 0.8 + copy 0.2, waiting gemm 0.3 + copy 0.15, tail 0.1 (profiled 1.55).
    Step difference -0.5. Busy: -0.2, residual (host gap) -0.3: explains 1 - 0.3/0.5 = 40 %. Busy + waiting:
    gemm -0.4, copy -0.15, sum -0.55, residual +0.05 (the profiler's added time differs by 0.05): 90 %, and
    the signed share 110 % shows the over-explanation."""
    a = _phase_summary(2.0, {"gemm": 1.0, "copy": 0.2}, {"gemm": 0.5, "copy": 0.3}, 0.1, 2.1)
    b = _phase_summary(1.5, {"gemm": 0.8, "copy": 0.2}, {"gemm": 0.3, "copy": 0.15}, 0.1, 1.55)
    d = diff_phase(a, b)
    assert d["wall_delta"] == pytest.approx(-0.5) and d["gap_delta"] == pytest.approx(-0.3)
    assert d["explained_by_busy"] == pytest.approx(0.4) and d["explained_by_busy_signed"] == pytest.approx(0.4)
    assert d["busy_wait_delta"] == _ms(gemm=-0.4, copy=-0.15)
    assert d["profiled_delta"] == pytest.approx(-0.55) and d["tail_delta"] == pytest.approx(0.0)
    assert d["explained_by_busy_and_wait"] == pytest.approx(0.9)
    assert d["explained_by_busy_and_wait_signed"] == pytest.approx(1.1)
    text = format_diff("A", "B", ("m", "w", "bf16", "none", "cpu", "1", "8", "3"), d)
    assert "busy time explains 40 %" in text and "busy + waiting explains 90 % (their changes sum to 110 %" in text
    assert "the kernel categories' changes 40 %, the host gap's" in text
    assert "GPU idle, waiting for the host) 60 %" in text
    assert list(d["profiler_added"]) == pytest.approx([0.1, 0.05])  # profiled minus timed step, each side
    b_close = _phase_summary(1.5, {"gemm": 0.8, "copy": 0.2}, {"gemm": 0.3, "copy": 0.15}, 0.1, 1.58)
    assert diff_phase(a, b_close)["waiting_split_reliable"]  # additions 0.02 ms apart: within a tenth of 0.5
    b_noisy = _phase_summary(1.5, {"gemm": 0.8, "copy": 0.2}, {"gemm": 0.8, "copy": 0.15}, 0.1, 2.05)
    noisy = diff_phase(a, b_noisy)  # the profiler added 0.55 ms to B's step, 0.1 to A's
    assert not noisy["waiting_split_reliable"]
    assert "indicative only: the profiler added 0.10 ms to A's step and 0.55 ms to B's" in format_diff(
        "A", "B", ("m",) * 8, noisy)
    assert "step tail" in text and "step (profiled)" in text
    older = {k: v for k, v in a.items() if k != "timeline"}  # a summary written before the timeline split
    assert diff_phase(older, b)["explained_by_busy_and_wait"] is None
    assert "busy + waiting: no timeline split" in format_diff("A", "B", ("m",) * 8, diff_phase(older, b))


def test_profile_steps_below_one_is_one_line():
    from harness.api import compose_config
    from harness.config.schema import check_config
    from harness.errors import UserError

    with pytest.raises(UserError, match="measure.profile_steps=0 is below 1"):
        check_config(compose_config(["measure.profile_steps=0"]))


def test_hook_kernel_category_refines_the_rule(registry):
    ort = registry.open("onnxruntime")  # no load needed: the answer is a table of op types
    hf = registry.open("hf-flashattn-staticcache")
    try:
        assert ort.kernel_category(name="GroupQueryAttention") == "attention"
        assert ort.kernel_category(name="MatMulNBits") == "gemm"
        assert ort.kernel_category(name="aten::mm") is None  # not an ORT op: the rule decides
        assert hf.kernel_category(name="aten::mm") is None  # a backend without the hook leaves it to the rule
    finally:
        ort.close()
        hf.close()
    refined = categorizer(lambda name: {"my_kernel": "attention", "odd": "not-a-category"}.get(name))
    assert refined("my_kernel") == "attention"
    assert refined("odd") == default_category("odd") == "other"  # an unknown answer falls back to the rule
    assert refined("aten::mm") == "gemm"


@pytest.fixture(scope="module")
def ort_cache(tmp_path_factory):
    """One ONNX export of the tiny model for this module's tests."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.mark.slow  # one ONNX export of the tiny model
def test_hook_profile_kernels_onnxruntime_cpu_continues_the_sequence(registry, tmp_path, ort_cache):
    """ORT's CPU EP runs no torch operators: its kernels come from ORT's own profiler, on a second session that
    continues the first one's sequence (same logits as unprofiled), and the timed session never profiles."""
    pytest.importorskip("onnxruntime")
    handle, source, _ = open_backend(registry, "onnxruntime", max_seq=32, tmp_cache=ort_cache)
    ids = torch.randint(0, source.config().vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    try:
        def steps(profiled: bool):
            handle.reset_kv()
            logits = handle.prefill(input_ids=ids, prompt_lens=None)
            found = {}

            def decode():
                nonlocal logits
                for _ in range(3):
                    logits = handle.decode_step(tokens=logits.argmax(-1, keepdim=True))

            if profiled:
                found["events"] = handle.profile_kernels(run=decode, trace_path=str(tmp_path / "trace.json"))
            else:
                decode()
            return logits, found.get("events")

        reference, _ = steps(profiled=False)
        timed_session = handle.instance.runner.session
        logits, events = steps(profiled=True)
        torch.testing.assert_close(logits, reference)
        assert handle.instance.runner.session is timed_session
        names = {e["name"] for e in events}
        assert "MatMul" in names and all(e["us"] >= 0 for e in events)
        # three steps, each the same graph: every op type ran a multiple of three times (the warm-up run dropped)
        counts = pd.Series([e["name"] for e in events]).value_counts()
        assert (counts % 3 == 0).all(), counts
        assert json.loads((tmp_path / "trace.json").read_text())  # ORT's Chrome trace, kept
    finally:
        handle.close()


class StepClock:
    """An observer: when each decode_step call started and whether a torch profiler was recording it."""

    def __init__(self):
        self.calls: list[tuple[float, bool]] = []

    @hookimpl(hookwrapper=True)
    def decode_step(self, tokens):
        self.calls.append((time.perf_counter(), torch._C._autograd._profiler_enabled()))
        yield


def _run(overrides, out, plugins):
    from harness.api import compose_config
    from harness.run.job import run_job

    assert run_job(compose_config([*overrides, f"output_dir={out}"]), out, plugins) == 0
    return pd.read_csv(out / "results.csv")


def test_profile_follows_the_timed_iterations_and_leaves_their_samples_alone(tmp_path):
    """Item 5: the profiled steps are a suffix of the cell's decode steps (all timed steps came first), with and
    without measure.profile; the timed samples of the two runs agree loosely (a loaded machine is noisy, so the
    ordering is the proof and the distribution check only a sanity bound: it compares the fastest step of each run,
    since another process on a two-core machine can slow every step of one run several-fold and its median with it)."""
    from harness.plugin.plugins import PluginRegistry

    plugins = PluginRegistry.discover()
    clock = StepClock()
    plugins.add_observer(clock, name="step-clock")
    # one intra-op thread: two OpenMP threads spin at every operator's barrier, and with another process on one of
    # the two cores a sub-millisecond step grew twentyfold in one run and not in the other
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = _profile_and_plain_runs(tmp_path, plugins, clock)
    finally:
        torch.set_num_threads(threads)
    ratio = float(results[True].min() / results[False].min())
    assert 1 / 3 < ratio < 3, ratio
    _check_profile_files(tmp_path)


def _profile_and_plain_runs(tmp_path, plugins, clock) -> dict[bool, np.ndarray]:
    """The timed decode steps of the cell with and without measure.profile, by the flag."""
    from harness.record.samples import read_cell_samples

    results = {}
    for profile in (True, False):
        clock.calls.clear()
        out = tmp_path / f"profile_{profile}"
        # sdpa named: auto picks by measuring, and on a loaded machine eager may win (the label asserted is SDPA's)
        rows = _run([*ONE_CELL, "backend.attention=sdpa", f"measure.profile={profile}", "measure.profile_steps=2"],
                    out, plugins)
        profiled = [p for _, p in clock.calls]
        first = profiled.index(True)
        assert all(profiled[first:]) and len(profiled) - first == (2 if profile else 1)
        iterations = int(rows.iterations.iloc[0])
        assert first >= (1 + iterations) * 3  # warm-up and timed steps all before the first profiled one
        info = json.loads(rows.backend_info.iloc[0])
        assert info["attention_kernel_decode"] == "aten::_scaled_dot_product_flash_attention_for_cpu"
        assert info["attention_kernel_decode_probe"] == "flash-cpu"  # what the load-time probe said, kept
        assert json.loads((out / "run.json").read_text())["backend_info"]["attention_kernel_decode"] == \
            info["attention_kernel_decode"]
        results[profile] = read_cell_samples(out, 1, 8, 3)["decode_ms"].ravel()
        assert (out / "profile").exists() == profile
        assert rows.metric.str.startswith("profile_").any() == profile
    return results


def _check_profile_files(tmp_path) -> None:
    from harness.profile import cell

    summary = json.loads((tmp_path / "profile_True" / "profile" / "b1_p8_n3" / "summary.json").read_text())
    decode = summary["decode"]
    assert decode["steps_profiled"] == 2 and decode["source"] == "cpu-operators"
    assert sum(decode["category_ms_per_step"].values()) == pytest.approx(decode["busy_ms_per_step"])
    assert set(decode["category_ms_per_step"]) == set(CATEGORIES)
    split = decode["timeline"]  # every profiled step's wall time: busy + waiting per category + tail (- overlap)
    assert split["steps"] == 2 and split["busy_ms_per_step"] == pytest.approx(decode["category_ms_per_step"])
    assert sum(split["busy_ms_per_step"].values()) + sum(split["wait_ms_per_step"].values()) + \
        split["tail_ms_per_step"] - split["overlap_ms_per_step"] == pytest.approx(split["wall_ms_per_step"])
    assert split["overlap_ms_per_step"] == pytest.approx(0.0, abs=1e-6)  # one host thread: self times partition
    assert summary["prefill"]["timeline"]["steps"] == 1
    with gzip.open(tmp_path / "profile_True" / "profile" / "b1_p8_n3" / "decode.trace.json.gz") as f:
        assert json.load(f)["traceEvents"]
    metrics = rows_of(tmp_path / "profile_True")
    assert metrics["profile_decode_busy_ms_per_step"] == pytest.approx(decode["busy_ms_per_step"])
    assert metrics["profile_decode_host_gap_ms_per_step"] == pytest.approx(
        metrics["decode_latency_ms"] - decode["busy_ms_per_step"])
    parts = [metrics[cell.category_metric(c)] + metrics[cell.wait_metric(c)] for c in CATEGORIES]
    assert sum(parts) + metrics[cell.TAIL] - metrics[cell.OVERLAP] == pytest.approx(metrics[cell.PROFILED_STEP])
    assert all(metrics[cell.wait_metric(c)] >= 0 for c in CATEGORIES) and metrics[cell.TAIL] > 0
    # the prefill is one step: the same split, in ms, from the prefill's timeline
    prefill, units = summary["prefill"]["timeline"], units_of(tmp_path / "profile_True")
    parts = [metrics[cell.category_metric(c, "prefill")] + metrics[cell.wait_metric(c, "prefill")] for c in CATEGORIES]
    assert sum(parts) + metrics[cell.PREFILL_TAIL] - metrics[cell.PREFILL_OVERLAP] == \
        pytest.approx(metrics[cell.PREFILL_PROFILED_STEP])
    assert metrics[cell.PREFILL_PROFILED_STEP] == pytest.approx(prefill["wall_ms_per_step"])
    assert sum(metrics[cell.category_metric(c, "prefill")] for c in CATEGORIES) == \
        pytest.approx(metrics[cell.PREFILL_BUSY])
    assert all(metrics[cell.wait_metric(c, "prefill")] >= 0 for c in CATEGORIES) and metrics[cell.PREFILL_TAIL] > 0
    assert units[cell.PREFILL_PROFILED_STEP] == units[cell.wait_metric("gemm", "prefill")] == "ms"
    assert cell.wait_metric("gemm", "prefill") == "profile_prefill_gemm_wait_ms"
    assert not any(m.startswith("energy_") and m != "energy_per_token_j" for m in metrics)  # CPU: absent, not 0


def units_of(out) -> dict[str, str]:
    return dict(zip(*pd.read_csv(out / "results.csv")[["metric", "unit"]].values.T))


def rows_of(out) -> dict[str, float]:
    rows = pd.read_csv(out / "results.csv")
    return {r.metric: (r.p50 if pd.notna(r.p50) else r.mean) for r in rows.itertuples()}


@pytest.mark.slow  # two profiled runs, one of them ONNX Runtime
def test_report_says_where_the_time_goes_and_why_diffs_two_runs(tmp_path, ort_cache, capsys):
    """Done-when on the CPU: measure.profile=true over an HF and an ONNX Runtime run; the report has the section
    with its stacked-bar plot and the diff table, and ``enginebench-report why A B`` prints the cells both ran."""
    pytest.importorskip("onnxruntime")
    from harness.plugin.plugins import PluginRegistry
    from harness.report.cli import build_report, main

    plugins = PluginRegistry.discover()
    grid = [o for o in ONE_CELL if not o.startswith("grid.batch_sizes")]
    common = [*grid, "grid.batch_sizes=[1,2]", "measure.profile=true", f"cache_dir={ort_cache}"]
    hf, ort = tmp_path / "hf", tmp_path / "ort"
    _run(common, hf, plugins)
    _run([*common, "backend=onnxruntime"], ort, plugins)
    assert sorted(p.name for p in (ort / "profile").iterdir()) == ["b1_p8_n3", "b2_p8_n3"]
    assert json.loads((ort / "profile" / "b1_p8_n3" / "summary.json").read_text())["decode"]["source"] == "backend"
    from harness.profile import cell
    ort_metrics = rows_of(ort)  # ORT's own profiler: busy by category, no timeline split (absent, not 0)
    assert cell.category_metric("gemm", "prefill") in ort_metrics and cell.PREFILL_PROFILED_STEP not in ort_metrics
    assert not any("_wait_ms" in m or "_tail_ms" in m for m in ort_metrics)

    written = build_report([str(hf), str(ort)], tmp_path / "report")
    text = written["report"].read_text()
    section = text[text.index("## Where the time goes"):]
    pngs = sorted((tmp_path / "report" / "plots").glob("where_time_goes_*.png"))
    assert len(pngs) == 1 and f"({pngs[0].relative_to(tmp_path / 'report')})" in section
    assert "Against `hf-flashattn-staticcache`" in section and "| onnxruntime | 2 | 8 |" in section

    with pytest.raises(SystemExit) as done:
        main(["why", str(hf), str(ort)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.count("busy time explains") == 2 and "b=1 p=8" in out and "b=2 p=8" in out
    assert out.count("busy + waiting: no timeline split") == 2  # ORT's CPU profile has kernel times, no timeline
    assert "A = hf-flashattn-staticcache" in out and "B = onnxruntime" in out
    with pytest.raises(SystemExit) as refused:
        main(["why", str(hf), str(tmp_path / "report")])
    assert refused.value.code == 2
    assert "no profile under" in capsys.readouterr().err


def _profiled_row(backend: str, batch: int, **metrics) -> dict:
    return {"backend": backend, "model": "m", "dtype": "float32", "device": "cpu", "batch_size": batch,
            "prompt_len": 8, **metrics}


def test_step_bars_stack_busy_waiting_and_tail_to_the_profiled_step():
    """A bar with a timeline adds up to the profiled step (busy + waiting + tail − overlap), each category's waiting
    part hatched in the category's colour; a bar without one (an older run, a backend's own profiler) is busy by
    category plus the host gap, as before."""
    from matplotlib.colors import same_color

    from harness.profile import cell
    from harness.report.step_bars import COLORS, figures

    busy = {"gemm": 0.5, "attention": 0.2, "norm_elementwise": 0.1, "copy": 0.05, "sampling": 0.01, "other": 0.04}
    wait = {"gemm": 0.3, "attention": 0.1, "norm_elementwise": 0.2, "copy": 0.4, "sampling": 0.0, "other": 0.02}
    timeline = {**{cell.category_metric(c): ms for c, ms in busy.items()},
                **{cell.wait_metric(c): ms for c, ms in wait.items()},
                cell.TAIL: 0.15, cell.OVERLAP: 0.03, cell.BUSY: 0.9, cell.GAP: 0.6}
    step = sum(busy.values()) + sum(wait.values()) + 0.15 - 0.03
    timeline[cell.PROFILED_STEP] = step
    older = {**{cell.category_metric(c): ms for c, ms in busy.items()}, cell.BUSY: 0.9, cell.GAP: 0.35}
    table = pd.DataFrame([_profiled_row("a-timeline", b, **timeline) for b in (1, 4)]
                         + [_profiled_row("b-older", b, **older) for b in (1, 4)])
    (tag, fig), = figures(table)
    assert tag == "m_float32_cpu" and len(fig.axes) == 2
    for ax in fig.axes:
        bars = [p for p in ax.patches if p.get_height() != 0]
        heights = {x: sum(p.get_height() for p in bars if round(p.get_x() + p.get_width() / 2) == x) for x in (0, 1)}
        assert heights == {0: pytest.approx(step), 1: pytest.approx(sum(busy.values()) + 0.35)}
        hatched = [p for p in bars if p.get_hatch() and round(p.get_x() + p.get_width() / 2) == 0]
        assert len(hatched) == 5 + 1  # five categories waited, and the tail
        for c in ("gemm", "copy"):  # waiting: the category's colour as its hatch, lighter fill
            part = next(p for p in hatched if p.get_height() == pytest.approx(wait[c]))
            assert same_color(part.get_edgecolor(), COLORS[c]) and not same_color(part.get_facecolor(), COLORS[c])
        gap = [p for p in bars if p.get_hatch() and round(p.get_x() + p.get_width() / 2) == 1]
        assert [p.get_height() for p in gap] == [pytest.approx(0.35)]  # the older bar's one hatched part
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("hatched, lighter: waiting") for t in labels) and "host gap (timed step − busy)" in labels
    assert set(CATEGORIES) <= set(labels)


def test_step_bars_name_each_configuration_in_full():
    """Two configurations that differ only in a late option stay apart on the axis: labels wrap, never truncate."""
    from harness.profile import cell
    from harness.report.step_bars import figures

    row = {cell.BUSY: 0.9, cell.GAP: 0.35, cell.category_metric("gemm"): 0.9}
    names = ["onnxruntime[attention=gqa,cuda_graph=True,fused_ops=True,quant=int4-g128-asym]",
             "onnxruntime[attention=gqa,cuda_graph=True,fused_ops=True,quant=int8-g128]"]
    (_, fig), = figures(pd.DataFrame([_profiled_row(n, 1, **row) for n in names]))
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert [t.rsplit("\n(", 1)[0].replace("\n", "") for t in ticks] == sorted(names)
    assert all(len(line) <= 40 for t in ticks for line in t.split("\n"))


def test_isolated_cells_labels_reach_run_json_backend_info():
    """With isolation=process the parent writes run.json: it adopts the label each cell's rows carry."""
    from harness.profile.cell import adopt_labels

    info = {"attention_kernel_decode": "flash-cpu", "providers": ["x"]}
    flash = "aten::_scaled_dot_product_flash_attention_for_cpu"
    rows = [{"backend_info": json.dumps({"attention_kernel_decode": flash, "attention_kernel_decode_probe": "flash-cpu",
                                         "profile_source": "cpu-operators", "providers": ["x"]})}]
    adopt_labels(info, rows)
    assert info == {"attention_kernel_decode": flash, "attention_kernel_decode_probe": "flash-cpu",
                    "profile_source": "cpu-operators", "providers": ["x"]}
    adopt_labels(info, [{"backend_info": ""}])  # a failed cell's row: nothing to adopt
    assert info["attention_kernel_decode_probe"] == "flash-cpu"
