"""One job: load the chosen backend, validate it, sweep the batch × prompt-length grid, write the results.

Each cell: reset KV, prefill, ``new_tokens`` decode steps feeding back the greedy token (argmax on the device,
outside the timed hook calls); ``warmup`` iterations are discarded, then iterations repeat until both
``min_iters`` and ``min_seconds`` are met. A cell that fails (out of memory, backend error) is recorded with its
status and error and the sweep goes on; every finished cell is on disk before the next one starts.
"""
from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness import progress
from harness.environment import describe, device_label, resolve_device
from harness.errors import UserError
from harness.inputs import random_prompt_ids
from harness.loadspec import LoadSpec
from harness.memory import MemorySampler, energy_mj, nvml_handle
from harness.models import ModelSource, dtype_name, resolve_dtype
from harness.results import ResultsWriter, rows_for_cell, write_run_json
from harness.roofline import decode_bytes_per_step, measure_copy_bandwidth, prefill_flops
from harness.stats import summarize
from harness.timing import StepTimer, synchronize
from harness.validate import as_rows, validate_backend


@dataclass
class Job:
    """Everything resolved for one job (one backend, one model, one device)."""

    cfg: Any
    out_dir: Path
    backend: str
    source: ModelSource
    device: str
    dtype: torch.dtype
    cells: list[tuple[int, int]]
    info: dict[str, Any] = field(default_factory=dict)
    validation: str = "skipped"

    @property
    def hf_config(self):
        return self.source.config()

    def row_context(self) -> dict[str, Any]:
        """What every result row of this job carries besides its cell and metric."""
        return {"validation": self.validation, "seed": self.cfg.seed, "backend_info": json.dumps(self.info),
                "run_id": self.out_dir.name}

    def identity(self, batch: int, prompt_len: int) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.source.name, "weights": self.source.weights,
                "dtype": dtype_name(self.dtype), "device": device_label(self.device), "batch_size": batch,
                "prompt_len": prompt_len, "new_tokens": self.cfg.grid.new_tokens}


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate" in text or "bad_alloc" in text


def plan_job(cfg, out_dir: Path) -> Job:
    device = resolve_device(cfg.device)
    source = ModelSource.from_config(cfg.model, cfg.seed)
    dtype = resolve_dtype(cfg.model.dtype, device)
    cells = sorted((b, p) for b in cfg.grid.batch_sizes for p in cfg.grid.prompt_lens)
    return Job(cfg, out_dir, cfg.backend.name, source, device, dtype, cells)


def load_spec(job: Job) -> LoadSpec:
    from omegaconf import OmegaConf

    cfg = job.cfg
    options = OmegaConf.to_container(cfg.backend, resolve=True)
    options.pop("name", None)
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    grid = cfg.grid
    max_batch = max(max(grid.batch_sizes), cfg.validation.batch if cfg.validation.enabled else 1)
    max_seq = max(max(grid.prompt_lens) + grid.new_tokens, cfg.validation.prompt_len + cfg.validation.new_tokens)
    return LoadSpec(model=job.source, dtype=job.dtype, device=job.device, options=options, max_batch=max_batch,
                    max_seq=max_seq, task=cfg.task, cache_dir=cache_dir, opt_batch=min(grid.batch_sizes),
                    opt_prompt_len=min(grid.prompt_lens))


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("ENGINEBENCH_CACHE_DIR", Path.home() / ".cache" / "enginebench"))


def run_validation(job: Job, handle) -> list[dict]:
    v = job.cfg.validation
    results = validate_backend(handle, job.source, job.dtype, job.device, v.batch, v.prompt_len, v.new_tokens,
                               job.cfg.seed)
    job.validation = "pass" if all(r.passed for r in results) else "fail"
    rows = [{"backend": job.backend, "model": job.source.name, "dtype": dtype_name(job.dtype),
             "device": device_label(job.device), **r} for r in as_rows(results)]
    import pandas as pd
    from harness.results import atomic_write_text

    atomic_write_text(job.out_dir / "validation.csv", pd.DataFrame(rows).to_csv(index=False))
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        progress.say(f"validate {job.backend} [{r.case}]: {mark}  max|Δ|={r.max_abs_diff:.3g} "
                     f"(tol {r.tolerance:.3g})  top-1 {r.top1_agreement:.3f}  greedy {r.greedy_agreement:.3f}"
                     + (f"  ({r.reason})" if r.reason else ""))
    return rows


def measure_overhead(job: Job, handle, batch: int, steps: int) -> dict[str, float]:
    """Harness cost per decode step: the timed hook loop vs the backend's own function called directly."""
    direct = handle.direct_decode_step()
    timer = StepTimer(job.device)
    ids = random_prompt_ids(job.hf_config, batch, 8, job.cfg.seed).to(job.device)
    steps = min(steps, job.cfg.grid.new_tokens + max(job.cfg.grid.prompt_lens) - 8)

    def via_harness():
        handle.reset_kv()
        tok = handle.prefill(input_ids=ids, prompt_lens=None).argmax(-1, keepdim=True)
        synchronize(job.device)
        t0 = time.perf_counter()
        timer.start()
        for _ in range(steps):
            timer.mark()
            logits = handle.decode_step(tokens=tok)
            timer.mark()
            tok = logits.argmax(-1, keepdim=True)
        synchronize(job.device)
        return (time.perf_counter() - t0) / steps

    def via_backend():
        handle.reset_kv()
        tok = handle.prefill(input_ids=ids, prompt_lens=None).argmax(-1, keepdim=True)
        synchronize(job.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            tok = direct(tokens=tok).argmax(-1, keepdim=True)
        synchronize(job.device)
        return (time.perf_counter() - t0) / steps

    via_harness(), via_backend()  # warm-up (compilation, graphs)
    harness_s, backend_s = [], []
    for _ in range(5):  # interleaved so that drift hits both alike
        harness_s.append(via_harness())
        backend_s.append(via_backend())
    h, b = sorted(harness_s)[2], sorted(backend_s)[2]
    return {"harness_step_ms": h * 1e3, "direct_step_ms": b * 1e3, "harness_overhead_us": (h - b) * 1e6,
            "harness_overhead_frac": (h - b) / b if b > 0 else math.nan}


def time_cell(job: Job, handle, batch: int, prompt_len: int) -> tuple[list, int]:
    """Timed iterations of one cell: per-iteration prefill and e2e, per-step decode (ms), and the energy (J)."""
    cfg = job.cfg
    ids = random_prompt_ids(job.hf_config, batch, prompt_len, cfg.seed).to(job.device)
    timer = StepTimer(job.device)

    def iteration():
        handle.reset_kv()
        synchronize(job.device)
        timer.start()
        m0 = timer.mark()
        logits = handle.prefill(input_ids=ids, prompt_lens=None)
        m1 = timer.mark()
        steps = []
        for _ in range(cfg.grid.new_tokens):
            tok = logits.argmax(-1, keepdim=True)  # greedy feedback on the device, outside the timed hook call
            a = timer.mark()
            logits = handle.decode_step(tokens=tok)
            steps.append((a, timer.mark()))
        timer.finish()
        return m0, m1, steps

    for _ in range(cfg.measure.warmup):
        iteration()
    nv = nvml_handle(job.device)
    energy_start, started = energy_mj(nv), time.perf_counter()
    prefill_ms, decode_ms, e2e_ms = [], [], []
    while True:
        m0, m1, steps = iteration()
        prefill_ms.append(timer.elapsed_ms(m0, m1))
        decode_ms.extend(timer.elapsed_ms(a, b) for a, b in steps)
        e2e_ms.append(timer.elapsed_ms(m0, steps[-1][1]))
        progress.cell_progress(len(e2e_ms))
        enough = len(e2e_ms) >= cfg.measure.min_iters and time.perf_counter() - started >= cfg.measure.min_seconds
        if enough or len(e2e_ms) >= cfg.measure.max_iters:
            break
    energy_end = energy_mj(nv)
    energy_j = None if energy_start is None or energy_end is None else (energy_end - energy_start) / 1e3
    return [prefill_ms, decode_ms, e2e_ms, energy_j], len(e2e_ms)


def cell_metrics(job: Job, batch: int, prompt_len: int, samples, peaks, peak_bw: float) -> list[tuple]:
    prefill_ms, decode_ms, e2e_ms, energy_j = samples
    n, cfg = job.cfg.grid.new_tokens, job.hf_config
    ctx = prompt_len + n / 2  # mean KV fill over the decode steps
    nbytes = decode_bytes_per_step(cfg, batch, ctx, torch.finfo(job.dtype).bits // 8)
    flops = prefill_flops(cfg, batch, prompt_len)
    metrics = [
        ("prefill_latency_ms", "ms", summarize(prefill_ms)),
        ("decode_latency_ms", "ms", summarize(decode_ms)),
        ("e2e_latency_ms", "ms", summarize(e2e_ms)),
        ("prefill_throughput_tok_s", "tokens/s", summarize(batch * prompt_len / (t / 1e3) for t in prefill_ms)),
        ("decode_throughput_tok_s", "tokens/s", summarize(batch / (t / 1e3) for t in decode_ms)),
        ("e2e_throughput_tok_s", "tokens/s", summarize(batch * n / (t / 1e3) for t in e2e_ms)),
        ("decode_bandwidth_gb_s", "GB/s", summarize(nbytes / (t / 1e3) / 1e9 for t in decode_ms)),
        ("decode_bandwidth_frac", "fraction of measured copy bandwidth",
         summarize(nbytes / (t / 1e3) / peak_bw for t in decode_ms)),
        ("prefill_tflop_s", "TFLOP/s", summarize(flops / (t / 1e3) / 1e12 for t in prefill_ms)),
    ]
    for name, value in vars(peaks).items():
        if value is not None:
            metrics.append((name, "MiB", summarize([value])))
    if energy_j is not None:
        tokens = batch * n * len(e2e_ms)
        metrics.append(("energy_per_token_j", "J/token", summarize([energy_j / tokens])))
    return metrics


def run_cell(job: Job, handle, batch: int, prompt_len: int, peak_bw: float) -> list[dict]:
    identity = job.identity(batch, prompt_len)
    extra = job.row_context()
    sampler = MemorySampler(job.device, job.cfg.measure.memory_interval_ms / 1e3)
    try:
        with sampler:
            samples, iters = time_cell(job, handle, batch, prompt_len)
        metrics = cell_metrics(job, batch, prompt_len, samples, sampler.peaks, peak_bw)
        return rows_for_cell(identity, metrics, status="ok", error="", iterations=iters, **extra)
    except Exception as exc:  # noqa: BLE001 - a failed cell is a result, not the end of the sweep
        status = "oom" if is_oom(exc) else "error"
        release_memory(job.device)
        return rows_for_cell(identity, [], status=status, error=one_line(exc), iterations=0, **extra)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}"


def release_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a poisoned CUDA context: later cells will say so (isolation=process helps)
            pass


def failed_rows(job: Job, cells, status: str, error: str) -> list[list[dict]]:
    extra = {**job.row_context(), "iterations": 0}
    return [rows_for_cell(job.identity(b, p), [], status=status, error=error, **extra) for b, p in cells]


def start_job(cfg, out_dir: Path) -> tuple[Job, ResultsWriter | None, dict[str, Any] | None]:
    """Plan the job, open its results (resuming if asked) and write the first run.json.

    With resume=true and every cell already in results.csv, run.json is left as it is and run_info is None: the
    job has nothing to do (in a resumed multirun, the jobs that had finished)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job = plan_job(cfg, out_dir)
    writer = ResultsWriter(out_dir, resume=cfg.resume) if cfg.task == "benchmark" else None
    if writer is not None and cfg.resume and not todo_cells(job, writer):
        progress.say(f"resume: all {len(job.cells)} cells of {job.backend} are in {out_dir}/results.csv; "
                     "nothing to run")
        return job, writer, None
    run_info: dict[str, Any] = {"config": _to_container(cfg), "environment": describe(job.device),
                                "device": job.device,
                                "weights": job.source.weights, "model_fingerprint": None}
    write_run_json(out_dir, run_info)
    return job, writer, run_info


def load_backend(job: Job, handle, run_info: dict) -> None:
    """Call the load hook; record what it reports. User errors propagate; other failures too (callers record)."""
    progress.say(f"loading {job.backend} on {job.device} ({dtype_name(job.dtype)}, {job.source.name}, "
                 f"{job.source.weights} weights) ...")
    t0 = time.perf_counter()
    job.info = handle.load(spec=load_spec(job)) or {}
    run_info["load_seconds"] = time.perf_counter() - t0
    run_info["backend_info"] = job.info
    run_info["model_fingerprint"] = job.source.fingerprint()


def record_load_failure(job: Job, writer: ResultsWriter | None, run_info: dict, exc: BaseException,
                        status: str | None = None) -> None:
    """Every cell not yet done gets a row saying why it did not run: nothing is silently missing."""
    status = status or ("oom" if is_oom(exc) else "load_failed")
    if writer is not None:
        for rows in failed_rows(job, todo_cells(job, writer), status, one_line(exc)):
            writer.append_cell(rows)
    run_info["load_error"] = one_line(exc)
    progress.say(f"{job.backend}: load failed: {one_line(exc)}")


def todo_cells(job: Job, writer: ResultsWriter) -> list[tuple[int, int]]:
    return [c for c in job.cells if not writer.is_done(job.identity(*c))]


def run_job(cfg, out_dir: Path, registry) -> int:
    """Run one job in this process; returns the exit status (0 ok, 1 failed validation or load)."""
    job, writer, run_info = start_job(cfg, out_dir)
    if run_info is None:
        return 0
    handle = registry.open(job.backend)
    try:
        try:
            load_backend(job, handle, run_info)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded for every cell
            record_load_failure(job, writer, run_info, exc)
            return 1
        if cfg.task == "build":
            progress.say(f"{job.backend}: artifacts ready ({run_info['load_seconds']:.1f} s)")
            return 0
        if cfg.task == "validate" or (cfg.task == "benchmark" and cfg.validation.enabled):
            run_info["validation"] = run_validation(job, handle)
            if cfg.task == "validate":
                return 0 if job.validation == "pass" else 1
        if cfg.task == "generate":
            from harness.generate import run_generate_task

            return run_generate_task(cfg, job, handle)
        peak_bw = prepare_benchmark(job, handle, run_info)
        sweep_cells(job, writer, lambda b, p: run_cell(job, handle, b, p, peak_bw))
    finally:
        try:
            handle.close()
        except Exception as exc:  # noqa: BLE001 - a failing close must not hide the job's own outcome
            run_info["close_error"] = one_line(exc)
        write_run_json(out_dir, run_info)
    return 0


def prepare_benchmark(job: Job, handle, run_info: dict) -> float:
    """Once per job: the device's copy bandwidth (roofline denominator) and the harness's own overhead."""
    peak_bw = measure_copy_bandwidth(job.device)
    run_info["peak_copy_bandwidth_gb_s"] = peak_bw / 1e9
    try:
        run_info["harness_overhead"] = measure_overhead(job, handle, min(job.cfg.grid.batch_sizes),
                                                        job.cfg.measure.overhead_steps)
    except Exception as exc:  # noqa: BLE001 - overhead is informative; a failure here is recorded, not fatal
        run_info["harness_overhead"] = {"error": one_line(exc)}
    return peak_bw


def sweep_cells(job: Job, writer: ResultsWriter, run_one) -> None:
    """Run every missing cell with ``run_one(batch, prompt_len) -> rows``, writing each as it finishes.

    After an out-of-memory cell, with ``measure.skip_larger_after_oom``, the cells at least as large in both
    batch and prompt length are recorded as skipped instead of being tried."""
    todo = todo_cells(job, writer)
    if len(todo) < len(job.cells):
        progress.say(f"resume: {len(job.cells) - len(todo)} of {len(job.cells)} cells already in results.csv")
    oom_cells: list[tuple[int, int]] = []
    with progress.cells(len(todo), f"{job.backend}") as bar:
        for batch, prompt_len in todo:
            bar.describe(f"{job.backend} b={batch} p={prompt_len}")
            bigger_than = [c for c in oom_cells if batch >= c[0] and prompt_len >= c[1]]
            if bigger_than and job.cfg.measure.skip_larger_after_oom:
                b0, p0 = bigger_than[0]
                rows = failed_rows(job, [(batch, prompt_len)], "skipped",
                                   f"not run: the smaller cell b={b0} p={p0} ran out of memory")[0]
            else:
                rows = run_one(batch, prompt_len)
            if rows[0]["status"] == "oom":
                oom_cells.append((batch, prompt_len))
            writer.append_cell(rows)
            bar.advance(rows[0]["status"])
    progress.print_summary(writer.summary_path)


def _to_container(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)
