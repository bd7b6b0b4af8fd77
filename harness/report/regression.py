"""``enginebench-report compare OLD NEW``: cells whose latency moved beyond noise between two result sets.

Cells are matched by configuration (backend + non-default options) and grid cell. A matched cell is judged by a
test on both sides' kept samples (harness/stats.py): ``regression`` when NEW's latency is higher beyond noise and
by at least ``--threshold`` (the minimum effect), ``improvement`` when lower, else ``within noise``; ``unstable``
when either side has too few samples or too much spread, ``untested`` when a side kept no samples. Two result
sets with no cell in common are an error, and :func:`environment_differences` names what differs between the
machines and library versions that produced them.
"""
from __future__ import annotations

import pandas as pd

from harness import metrics
from harness.errors import UserError
from harness.report.aggregate import CELL, cell_samples, latest_per_cell
from harness.samples import comparison_units
from harness.stats import compare_samples

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
    pick = ["p10", "p50", "p90", "status", "source"]
    a = latest_per_cell(old[old.metric.isin(METRICS)])
    b = latest_per_cell(new[new.metric.isin(METRICS)])
    a, b = (x.reindex(columns=keys + pick) for x in (a, b))
    m = a.merge(b, on=keys, how="outer", suffixes=("_old", "_new"), indicator=True)
    if not (m["_merge"] == "both").any():
        raise UserError(f"no cell in common: OLD has {_describe(old)}; NEW has {_describe(new)}",
                        "compare runs of the same configuration (backend and options), model and grid cells")
    m["change"] = m.p50_new / m.p50_old - 1.0
    new_status = new.drop_duplicates(CELL + ["backend"], keep="last").set_index(CELL + ["backend"]).status
    rows = []
    for r in m.to_dict("records"):
        out = {"verdict": "", "change_ci_low": float("nan"), "change_ci_high": float("nan"),
               "p_value": float("nan"), "n_old": None, "n_new": None, "why_no_verdict": ""}
        if r["_merge"] == "left_only":
            status = new_status.get(tuple(r[k] for k in CELL + ["backend"]))
            out["verdict"] = f"{status} in new" if isinstance(status, str) and status != "ok" else "missing in new"
        elif r["_merge"] == "right_only":
            out["verdict"] = "new cell"
        else:
            s_old = cell_samples({**r, "source": r["source_old"]})
            s_new = cell_samples({**r, "source": r["source_new"]})
            if s_old is None or s_new is None:
                out["verdict"], out["why_no_verdict"] = "untested", "no samples kept by " + (
                    "either run" if s_old is None and s_new is None else "OLD" if s_old is None else "NEW")
            elif s_old["timing"] != s_new["timing"]:  # e.g. unsynced events against sustained (harness/samples.py)
                out["verdict"] = "untested"
                out["why_no_verdict"] = f"timed differently: OLD {s_old['timing']}, NEW {s_new['timing']}"
            else:
                v = compare_samples(comparison_units(s_old, r["metric"]), comparison_units(s_new, r["metric"]),
                                    min_effect=threshold, **test_options)
                out.update(verdict=VERDICT.get(v.verdict, v.verdict), change_ci_low=v.ratio_ci_low - 1,
                           change_ci_high=v.ratio_ci_high - 1, p_value=v.p_value, n_old=v.n_a, n_new=v.n_b,
                           why_no_verdict=v.reason)
        rows.append(out)
    result = pd.concat([m.drop(columns=["_merge", "source_old", "source_new"]),
                        pd.DataFrame(rows, index=m.index)], axis=1)
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
