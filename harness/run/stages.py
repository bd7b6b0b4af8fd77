"""The stages of a job before and around its cell loop, shared by the in-process run and the isolation worker:
open the results and run.json, load the backend, validate it (validation.csv), measure the device's bandwidth and
the harness's overhead (:func:`open_backend` runs them in order), and record a failed load for every cell it leaves
undone. The order they run in is harness/run/pipeline.py's.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch

from harness import progress
from harness.accuracy.validate import as_rows, validate_backend
from harness.measure.environment import describe, device_label
from harness.measure.machine_state import snapshot
from harness.measure.roofline import measure_copy_bandwidth
from harness.model.sources import dtype_name
from harness.plugin.plugins import registry
from harness.record.labels import configuration_label
from harness.record.results import ResultsWriter, atomic_write_text
from harness.record.runrecord import write_run
from harness.run.cell import measure_overhead
from harness.run.outdir import fingerprint
from harness.run.plan import Job, load_spec, plan_job
from harness.run.sweep import failed_rows, is_oom, one_line, todo_cells


def start_job(cfg, out_dir: Path) -> tuple[Job, ResultsWriter | None, dict[str, Any] | None]:
    """Plan the job, open its results (resuming if asked) and write the first run.json.

    With resume=true and every cell already in results.csv, run.json is left as it is and run_info is None: the
    job has nothing to do (in a resumed multirun, the jobs that had finished)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job = plan_job(cfg, out_dir)
    writer = None
    if cfg.task == "benchmark":
        writer = ResultsWriter(out_dir, resume=cfg.resume, retry_failed=cfg.retry_failed)
    if writer is not None and cfg.resume and not todo_cells(job, writer):
        progress.say(f"resume: all {len(job.cells)} cells of {job.backend} are in {out_dir}/results.csv; "
                     "nothing to run")
        return job, writer, None
    config = cfg.to_dict()
    defaults = registry().defaults(job.backend)
    run_info: dict[str, Any] = {"config": config, "environment": describe(job.device), "device": job.device,
                                **job.source.describe(), "model_fingerprint": None,
                                # the configuration's identity, so reports label it even where the backend is
                                # not installed: the backend plus every option that differs from its defaults
                                "configuration": configuration_label(job.backend, config["backend"], defaults),
                                "backend_defaults": defaults, "backend_provided_by": job.provided_by,
                                "machine_state": {"start": snapshot(job.device)},
                                "fingerprint": fingerprint(cfg)}  # what resume=true checks (harness/run/outdir.py)
    write_run(out_dir, run_info)
    return job, writer, run_info


def open_backend(job: Job, handle, info: dict, *, validate: bool, overhead: bool, peak_bw: float | None = None,
                 phase=lambda name: None) -> float | None:
    """The backend's stages before its cells, in one order for both executors: load, validate (when asked), then for
    a benchmark the device's copy bandwidth (unless already known) and the harness's overhead (when asked).
    ``phase(name)`` is told before each stage that calls the backend (the worker times and names them by it).
    Returns the copy bandwidth in bytes/s (None outside a benchmark)."""
    phase("load")
    load_backend(job, handle, info)
    if validate:
        phase("validation")
        info["validation"] = run_validation(job, handle)
    if job.cfg.task != "benchmark":
        return peak_bw
    if peak_bw is None:
        peak_bw = measure_copy_bandwidth(job.device)
        info["peak_copy_bandwidth_gb_s"] = peak_bw / 1e9
    if overhead:
        phase("overhead")
        info["harness_overhead"] = harness_overhead(job, handle)
    return peak_bw


def load_backend(job: Job, handle, run_info: dict) -> None:
    """Call the load hook; record what it reports. User errors propagate; other failures too (callers record)."""
    if job.device.startswith("cuda"):
        # Device-less torch.cuda calls (synchronize, memory statistics) act on the current device. Make it the
        # job's: otherwise a job pinned to cuda:1 also opens a context on GPU 0 (seen by NVML on a 2-GPU host).
        # Here and not when planning: an isolated job's parent process must not open a context at all.
        torch.cuda.set_device(job.device)
    t0 = time.perf_counter()
    with progress.phase(f"loading {job.backend} on {job.device} ({dtype_name(job.dtype)}, {job.source.name}, "
                        f"{job.source.weights} weights)", _phase_key("load", job)):
        job.info = handle.load(spec=load_spec(job)) or {}
    run_info["load_seconds"] = time.perf_counter() - t0
    run_info["backend_info"] = job.info
    run_info["model_fingerprint"] = job.source.fingerprint()
    resolved = job.info.get("resolved_options") if isinstance(job.info, dict) else None
    if isinstance(resolved, dict) and resolved:
        # what an "auto" option became (trt-handbuilt on the CPU runs its reference evaluator, not TensorRT):
        # the configuration is labelled by what ran
        options = {**job.cfg.backend.as_dict(), **resolved}
        run_info["configuration"] = configuration_label(job.backend, options, registry().defaults(job.backend))


def _phase_key(what: str, job: Job) -> str:
    """What the duration estimate of a phase is keyed by (harness/progress.py): the same work on the same model."""
    return f"{what} {job.backend} {job.source.name} {dtype_name(job.dtype)} {job.device}"


def record_load_failure(job: Job, writer: ResultsWriter | None, run_info: dict, exc: BaseException,
                        status: str | None = None, trace: str | None = None) -> None:
    """Every cell not yet done gets a row saying why it did not run: nothing is silently missing. run.json keeps
    the traceback (``trace``, where the failure happened in another process) beside the one line."""
    status = status or ("oom" if is_oom(exc) else "load_failed")
    if writer is not None:
        for rows in failed_rows(job, todo_cells(job, writer), status, one_line(exc)):
            writer.append_cell(rows)
    run_info["load_error"] = one_line(exc)
    run_info["load_traceback"] = trace or traceback_tail(exc)
    progress.say(f"{job.backend}: load failed: {one_line(exc)}")


def traceback_tail(exc: BaseException, limit: int = 6000) -> str:
    """The exception's formatted traceback, its last ``limit`` characters (where it was raised is at the end)."""
    return "".join(traceback.format_exception(exc))[-limit:]


def run_validation(job: Job, handle) -> list[dict]:
    """Validate the loaded backend against HF float32; write validation.csv; set ``job.validation``."""
    import pandas as pd

    v = job.cfg.validation
    # hook results checked against the contract; NaN/inf are left to the comparison, which fails the case
    hooks = handle.checked(job.hf_config.vocab_size, job.device, finite=False)
    with progress.phase(f"validating {job.backend} against float32 HF", _phase_key("validate", job)):
        results = validate_backend(hooks, job.source, job.dtype, job.device, v.batch, v.prompt_len,
                                   v.new_tokens, job.cfg.seed, job.quant)
    job.validation = "pass" if all(r.passed for r in results) else "fail"
    job.accuracy = {**accuracy_summary(results), **text_perplexity(job, handle)}
    rows = [{"backend": job.backend, "model": job.source.name, "dtype": dtype_name(job.dtype),
             "device": device_label(job.device), **r, **job.accuracy} for r in as_rows(results)]
    atomic_write_text(job.out_dir / "validation.csv", pd.DataFrame(rows).to_csv(index=False))
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        progress.say(f"validate {job.backend} [{r.case}]: {mark}  max|Δ|={r.max_abs_diff:.3g} "
                     f"(tol {r.tolerance:.3g})  top-1 {r.top1_agreement:.3f}  greedy {r.greedy_agreement:.3f}"
                     + (f"  ({r.reason})" if r.reason else ""))
    return rows


def accuracy_summary(results) -> dict[str, float]:
    """The worst case over the validation cases: the ACCURACY_COLUMNS of every result row."""
    return {"accuracy_max_abs_diff": max(r.max_abs_diff for r in results),
            "accuracy_mean_abs_diff": max(r.mean_abs_diff for r in results),
            "accuracy_kl": max(r.kl_divergence for r in results),
            "accuracy_top1": min(r.top1_agreement for r in results),
            "accuracy_greedy": min(r.greedy_agreement for r in results)}


def text_perplexity(job: Job, handle) -> dict[str, float]:
    """Perplexity of the shipped text through the backend and through the float32 HF model (checkpoints with a
    tokenizer only: random weights make perplexity meaningless)."""
    from harness.accuracy.numerics import backend_perplexity, reference_perplexity, shipped_text_ids

    tokenizer = job.source.tokenizer()
    if tokenizer is None:
        return {}
    ids = shipped_text_ids(tokenizer, min(job.cfg.validation.perplexity_tokens, load_spec(job).max_seq))
    ours = backend_perplexity(handle, ids, job.device)
    ref = reference_perplexity(job.source.build_fp32_cpu(), ids)
    progress.say(f"perplexity {job.backend} ({ids.shape[1]} tokens of harness/data/perplexity.txt): {ours:.3f} "
                 f"(float32 HF: {ref:.3f})")
    return {"accuracy_perplexity": ours, "reference_perplexity": ref}


def harness_overhead(job: Job, handle) -> dict[str, Any]:
    """measure_overhead at the smallest batch, or the error it raised: informative, so a failure is not fatal."""
    try:
        with progress.phase(f"{job.backend}: measuring the harness's own overhead", _phase_key("overhead", job)):
            return measure_overhead(job, handle, min(job.cfg.grid.batch_sizes), job.cfg.measure.overhead_steps)
    except Exception as exc:  # noqa: BLE001
        return {"error": one_line(exc)}
