"""The timing core on its own (harness/measure/instrument.py): a backend handle, a prompt and a policy give samples on
both clocks without Hydra or a Job; host-bound cells are named; samples files keep both series and older files read;
no tool keeps its own timer."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness.accuracy.inputs import random_prompt_ids
from harness.measure import metrics
from harness.measure.instrument import CellSamples, MeasurePolicy, host_bound_phases, measure, time_calls
from harness.measure.sample_units import comparison_units
from harness.record.samples import (
    OLD_TIMING,
    SUSTAINED,
    read_cell_samples,
    samples_path,
    write_cell_samples,
)
from helpers import ROOT, open_backend

HF = "hf-flashattn-staticcache"


@pytest.fixture
def hf(registry):
    handle, source, _ = open_backend(registry, HF)
    yield handle, source
    handle.close()


def test_measure_without_a_job_gives_both_clocks_per_step(hf):
    handle, source = hf
    ids = random_prompt_ids(source.config(), 2, 8, seed=0)
    policy = MeasurePolicy(new_tokens=4, warmup=1, min_iters=3)
    s = measure(handle, ids, policy, device="cpu")
    assert s.iterations == 3
    assert len(s.prefill_ms) == len(s.prefill_device_ms) == 3
    assert len(s.decode_ms) == len(s.decode_device_ms) == 3 * 4
    # the sustained interval of a step holds the step's call and the token's trip: never shorter than the call
    assert all(w >= d > 0 for w, d in zip(s.decode_ms, s.decode_device_ms))
    assert all(w >= d > 0 for w, d in zip(s.prefill_ms, s.prefill_device_ms))
    # consecutive step starts tile the iteration: prefill + every step = end to end
    for i, e2e in enumerate(s.e2e_ms):
        assert e2e == pytest.approx(s.prefill_ms[i] + sum(s.decode_ms[4 * i:4 * i + 4]), rel=1e-9)


def test_time_calls_gives_device_and_sustained_time_per_call():
    out = time_calls(lambda: sum(range(2000)), calls=20, device="cpu")
    assert out["sustained_ms_per_call"] >= out["device_ms_per_call"] > 0


def test_host_bound_names_the_phase_whose_sustained_time_exceeds_the_device_time_by_10_percent():
    gpu_bound = CellSamples(prefill_ms=[10.5], decode_ms=[2.1] * 8, e2e_ms=[27.0],
                            prefill_device_ms=[10.0], decode_device_ms=[2.0] * 8)
    assert host_bound_phases(gpu_bound) == []  # 5 % apart
    slow_host = CellSamples(prefill_ms=[10.5], decode_ms=[4.5] * 8, e2e_ms=[46.5],
                            prefill_device_ms=[10.0], decode_device_ms=[2.84] * 8)
    assert host_bound_phases(slow_host) == ["decode"]
    both = CellSamples(prefill_ms=[12.0], decode_ms=[2.3] * 8, prefill_device_ms=[10.0], decode_device_ms=[2.0] * 8)
    assert host_bound_phases(both) == ["prefill", "decode"]
    assert host_bound_phases(CellSamples()) == []  # nothing measured, nothing claimed


def test_samples_keep_both_series_and_older_files_still_read(tmp_path):
    identity = {"batch_size": 1, "prompt_len": 8, "new_tokens": 2}
    write_cell_samples(tmp_path, identity, [3.0, 3.1], [[1.2, 1.3], [1.25, 1.2]], [5.6, 5.6], {},
                       [2.5, 2.6], [[1.0, 1.1], [1.0, 1.0]])
    s = read_cell_samples(tmp_path, 1, 8, 2)
    assert s["timing"] == SUSTAINED
    assert s["decode_device_ms"].shape == (2, 2)
    assert list(comparison_units(s, metrics.DECODE_DEVICE)) == [1.05, 1.0]
    assert list(comparison_units(s, metrics.DECODE_LATENCY)) == [1.25, 1.225]
    # a file in the layout written before the two clocks: three series, no timing in its meta
    old = samples_path(tmp_path, 2, 8, 2)
    np.savez_compressed(old, prefill_ms=np.array([3.0]), decode_ms=np.array([[1.0, 1.0]]), e2e_ms=np.array([5.0]),
                        meta=np.array(json.dumps({"identity": identity, "machine_state": {}})))
    s = read_cell_samples(tmp_path, 2, 8, 2)
    assert s["timing"] == OLD_TIMING and "decode_device_ms" not in s
    assert list(comparison_units(s, metrics.DECODE_LATENCY)) == [1.0]


def test_policy_from_the_measure_config_node():
    from harness.config.schema import MeasureConfig

    m = MeasureConfig()
    p = MeasurePolicy.from_config(m, new_tokens=7)
    assert (p.new_tokens, p.warmup, p.min_iters, p.max_iters) == (7, m.warmup, m.min_iters, m.max_iters)


# What reading a clock or creating a CUDA event looks like in Python source.
CLOCKS = re.compile(r"cuda\.Event\b|\bperf_counter\b|\bmonotonic\b|\btime\.time\b|\bprocess_time\b|\btimeit\b"
                    r"|elapsed_time\(|\bdatetime\.now\b|Event\(enable_timing")


def test_no_tool_keeps_its_own_timer():
    """Every number comes from one instrument: tools call harness.measure.instrument, they never time anything
    themselves (the independent cross-check lives apart, under docs/results/crosscheck/)."""
    offenders = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
                 for path in sorted((ROOT / "tools").rglob("*.py"))
                 for i, line in enumerate(path.read_text().splitlines(), 1) if CLOCKS.search(line)]
    assert offenders == []


def test_the_clock_pattern_catches_what_it_must():
    for line in ("start = torch.cuda.Event(enable_timing=True)", "t0 = time.perf_counter()",
                 "ms = a.elapsed_time(b)", "t = time.monotonic()", "import timeit"):
        assert CLOCKS.search(line), line
    assert not CLOCKS.search("from harness.measure.instrument import measure")
    assert Path(ROOT / "tools").is_dir()


def test_the_run_peak_is_the_highest_cell_peak_and_each_cell_keeps_its_own():
    from harness.measure.memory import lifetime_peaks

    rows = [{"status": "ok", "metric": metrics.HOST_RSS_PEAK, "max": "900.0"},
            {"status": "ok", "metric": metrics.HOST_RSS_PEAK, "max": "700.0"},  # a smaller later cell stays smaller
            {"status": "oom", "metric": metrics.HOST_RSS_PEAK, "max": "99999"},
            {"status": "ok", "metric": metrics.DECODE_LATENCY, "max": "5.0"}]
    peaks = lifetime_peaks(rows)
    assert peaks[metrics.HOST_RSS_PEAK] >= 900.0 and metrics.DECODE_LATENCY not in peaks
    assert peaks[metrics.HOST_RSS_PEAK] < 99999


def test_a_run_records_both_clocks_the_flag_the_kernel_reads_and_the_run_peak(tmp_path):
    """One tiny in-process job on the CPU: results.csv carries the device clock and the host_bound column, the
    samples both series, run.json the run's memory peak and what the attention kernel reads."""
    import pandas as pd

    from harness.api import benchmark
    from harness.report.aggregate import load_results
    from harness.report.host_bound import host_bound_cells
    from helpers import FAST

    out = benchmark(["backend=hf-flashattn-staticcache", "device=cpu", "isolation=none", "validation.enabled=false",
                     *FAST], output_dir=tmp_path / "run")
    tidy = pd.read_csv(out / "results.csv")
    assert {metrics.DECODE_DEVICE, metrics.PREFILL_DEVICE} <= set(tidy.metric)
    assert "host_bound" in tidy.columns
    s = read_cell_samples(out, 1, 8, 3)
    assert s["timing"] == SUSTAINED and s["decode_device_ms"].shape == s["decode_ms"].shape
    info = json.loads((out / "run.json").read_text())
    assert info["memory_lifetime_peak_mib"][metrics.HOST_RSS_PEAK] > 0
    assert info["backend_info"]["kv_cache_read"] == "allocated"  # SDPA over the static cache on the CPU
    # the report lists exactly the flagged cells, with both clocks
    flagged = tidy[tidy.host_bound.fillna("").astype(str).str.len() > 0]
    lines = host_bound_cells(load_results([out]))
    assert len(lines) == flagged.drop_duplicates(["batch_size", "prompt_len"]).shape[0]
    assert all("sustained vs" in line for line in lines)
