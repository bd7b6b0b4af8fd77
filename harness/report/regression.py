"""``enginebench-report compare OLD NEW``: cells whose latency moved beyond noise between two result sets.

Cells are matched by configuration (backend + non-default options) and grid cell. A matched cell is judged by a
test on both sides' kept samples: with at least two repeats a side (``measure.repeats``) between runs
(harness/record/replicated.py), ``regression`` when NEW's latency is higher beyond the run-to-run noise and by at least
``--min-effect``, ``improvement`` when lower, else ``within noise``; with one run a side within that run
(harness/measure/stats.py), and the verdict says so (``regression within this run``: a rerun may not repeat it).
``unstable`` when either side has too few samples or too much spread, ``untested`` when a side kept no samples.
``resolves_change`` is the smallest relative change the pair could have called. Two result sets with no cell in
common are an error, and :func:`environment_differences` names what differs between the machines and library
versions that produced them.
"""
from __future__ import annotations

import pandas as pd

from harness.errors import UserError
from harness.measure import metrics
from harness.report.aggregate import CELL
from harness.report.repeats import combine_repeats, judge, repeat_rows, run_timings, run_units, verdict_words

METRICS = (metrics.DECODE_LATENCY, metrics.PREFILL_LATENCY, metrics.E2E_LATENCY)
VERDICT = {"higher": "regression", "lower": "improvement"}


def _describe(tidy: pd.DataFrame) -> str:
    configs = sorted(tidy.backend.unique())
    cells = tidy.drop_duplicates(CELL)[["batch_size", "prompt_len", "new_tokens"]]
    grid = ", ".join(f"b{b}/p{p}/n{n}" for b, p, n in cells.itertuples(index=False))
    models = ", ".join(sorted(map(str, tidy.model.unique())))
    return f"{', '.join(configs)} on {models} at {grid or 'no cells'}"


def compare_runs(old: pd.DataFrame, new: pd.DataFrame, threshold: float = 0.05, **test_options) -> pd.DataFrame:
    keys = CELL + ["backend", "metric"]
    pick = ["p10", "p50", "p90", "status", "source", "repeats", "_repeat_rows"]
    a = combine_repeats(old[old.metric.isin(METRICS)])
    b = combine_repeats(new[new.metric.isin(METRICS)])
    a, b = (x.reindex(columns=keys + pick) for x in (a, b))
    m = a.merge(b, on=keys, how="outer", suffixes=("_old", "_new"), indicator=True)
    if not (m["_merge"] == "both").any():
        raise UserError(f"no cell in common: OLD has {_describe(old)}; NEW has {_describe(new)}",
                        "compare runs of the same configuration (backend and options), model and grid cells")
    m["change"] = m.p50_new / m.p50_old - 1.0
    new_status = new.drop_duplicates(CELL + ["backend"], keep="last").set_index(CELL + ["backend"]).status
    rows = []
    for r in m.to_dict("records"):
        out = {"verdict": "", "change": float("nan"), "change_ci_low": float("nan"), "change_ci_high": float("nan"),
               "p_value": float("nan"), "n_old": None, "n_new": None, "runs_old": None, "runs_new": None,
               "scope": "", "resolves_change": float("nan"), "why_no_verdict": ""}
        if r["_merge"] == "left_only":
            status = new_status.get(tuple(r[k] for k in CELL + ["backend"]))
            out["verdict"] = f"{status} in new" if isinstance(status, str) and status != "ok" else "missing in new"
        elif r["_merge"] == "right_only":
            out["verdict"] = "new cell"
        else:
            rows_old = repeat_rows({"_repeat_rows": r["_repeat_rows_old"]})
            rows_new = repeat_rows({"_repeat_rows": r["_repeat_rows_new"]})
            s_old, s_new = run_units(rows_old, r["metric"]), run_units(rows_new, r["metric"])
            if s_old is None or s_new is None:
                out["verdict"], out["why_no_verdict"] = "untested", "no samples kept by " + (
                    "either run" if s_old is None and s_new is None else "OLD" if s_old is None else "NEW")
            elif run_timings(rows_old) != run_timings(rows_new):  # e.g. unsynced events against sustained
                out["verdict"] = "untested"  # (harness/record/samples.py)
                out["why_no_verdict"] = (f"timed differently: OLD {', '.join(run_timings(rows_old))}, "
                                         f"NEW {', '.join(run_timings(rows_new))}")
            else:
                v = judge(s_old, s_new, min_effect=threshold, **test_options)
                out.update(verdict=verdict_words(v, VERDICT), change_ci_low=v.ratio_ci_low - 1,
                           change_ci_high=v.ratio_ci_high - 1, p_value=v.p_value, n_old=v.n_a, n_new=v.n_b,
                           runs_old=v.runs_a, runs_new=v.runs_b, scope=v.scope, resolves_change=v.resolves,
                           why_no_verdict=v.reason)
                out["change"] = v.ratio - 1  # the estimator the interval is about
        rows.append(out)
    dropped = ["_merge", "source_old", "source_new", "_repeat_rows_old", "_repeat_rows_new", "repeats_old",
               "repeats_new", "change"]
    result = pd.concat([m.drop(columns=dropped), pd.DataFrame(rows, index=m.index)], axis=1)
    result["change"] = result["change"].fillna(m["change"])
    return result.sort_values(keys).reset_index(drop=True)


# What must match for two runs' numbers to be comparable as they stand: (label, path into run.json)
ENVIRONMENT_KEYS = [("host", ("environment", "hostname")), ("CPU", ("environment", "cpu")),
                    ("GPU", ("environment", "gpu_name")), ("GPU driver", ("environment", "gpu_driver")),
                    ("CUDA runtime", ("environment", "cuda_runtime")), ("Python", ("environment", "python")),
                    ("enginebench commit", ("environment", "git_commit"))]


def _get(info: dict, path: tuple):
    for key in path:
        info = info.get(key, {}) if isinstance(info, dict) else {}
    return info if info != {} else None


def environment_differences(old_infos: list[dict], new_infos: list[dict]) -> list[str]:
    """One line per property (machine, driver, library version, commit) whose values differ between the runs."""
    lines = []
    for label, path in ENVIRONMENT_KEYS:
        a = sorted({str(v) for v in (_get(i, path) for i in old_infos) if v is not None})
        b = sorted({str(v) for v in (_get(i, path) for i in new_infos) if v is not None})
        if a and b and a != b:
            lines.append(f"{label}: OLD {', '.join(a)} vs NEW {', '.join(b)}")
    libs = sorted({k for i in old_infos + new_infos for k in i.get("environment", {}).get("libraries", {})})
    for lib in libs:
        a = sorted({i["environment"]["libraries"][lib] for i in old_infos
                    if lib in i.get("environment", {}).get("libraries", {})})
        b = sorted({i["environment"]["libraries"][lib] for i in new_infos
                    if lib in i.get("environment", {}).get("libraries", {})})
        if a != b:
            lines.append(f"{lib}: OLD {', '.join(a) or 'absent'} vs NEW {', '.join(b) or 'absent'}")
    return lines
