"""Find and merge tidy results from run directories, multirun directories or CSV files (any mix, any machine).

A result is identified by its *configuration*: the backend plus every backend option that differs from the
backend's defaults (``onnxruntime[attention=gqa,cuda_graph=true]``). Two configurations are never merged into one
number, and two runs of one configuration are never averaged: where a cell of one configuration appears in several
runs, the last one given is used and :func:`repeated_cells` lists the others for the report.
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.record.labels import configuration_label, with_quant
from harness.record.results import read_results_frame
from harness.record.samples import read_cell_samples

CELL = ["model", "weights", "dtype", "device", "batch_size", "prompt_len", "new_tokens"]


def result_files(paths: list[str | Path]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.suffix == ".csv":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(f for f in p.rglob("results.csv") if "report" not in f.parts))
        else:
            raise UserError(f"'{raw}' is neither a results CSV nor a directory",
                            "give run directories, multirun directories or results.csv files")
    if not found:
        raise UserError(f"no results.csv under {', '.join(map(str, paths))}",
                        "point enginebench-report at a run or multirun output directory")
    return found



def label_of_run(info: dict) -> str | None:
    """The configuration label of a run, from its run.json alone: the label recorded at run time, else one made from
    the backend's name, options and defaults the record holds (no plugin is discovered to label a result; a
    run.json without the defaults names every option: longer, but never shared by two configurations)."""
    if info.get("configuration"):
        return info["configuration"]
    options = info.get("config", {}).get("backend", {})
    if not options.get("name"):
        return None
    return configuration_label(options["name"], options, info.get("backend_defaults"))


_told: set[str] = set()


def say_skipped(what: str) -> None:
    """One line on stderr per damaged input (a reader skips it and reports the rest)."""
    if what not in _told:
        _told.add(what)
        print(f"enginebench-report: skipped {what}", file=sys.stderr, flush=True)


def read_run_info(run_dir: Path) -> dict | None:
    """The run.json of ``run_dir`` as a dict; None when there is none, or (said once) when it is not a JSON object."""
    run_json = Path(run_dir) / "run.json"
    if not run_json.exists():
        return None
    try:
        info = json.loads(run_json.read_text())
    except (OSError, ValueError) as exc:
        say_skipped(f"{run_json}: unreadable ({type(exc).__name__}); its rows are labelled by backend name only")
        return None
    if not isinstance(info, dict):
        say_skipped(f"{run_json}: not a JSON object; its rows are labelled by backend name only")
        return None
    return info


def run_label(run_dir: Path) -> str | None:
    """The configuration label of the run in ``run_dir`` (:func:`label_of_run`), or None without a run.json."""
    info = read_run_info(run_dir)
    return label_of_run(info) if info is not None else None


def load_results(paths: list[str | Path]) -> pd.DataFrame:
    """All tidy rows, one frame; ``source`` says which file each row came from, ``engine`` the backend and
    ``backend`` its configuration label (see the module docstring). A merged results.csv written by
    enginebench-report keeps its own ``source`` and labels, so it can be compared again. The weight
    quantization scheme, when there is one, joins the label (``onnxruntime[quant=int4-g128-asym]``)."""
    frames, files = [], result_files(paths)
    for f in files:
        df = _usable_results(f)
        if df is None:
            continue
        if "cv" not in df.columns and {"std", "mean"} <= set(df.columns):  # results from before CVs were kept
            df["cv"] = df["std"] / df["mean"]
        df["repeat"] = df["repeat"].fillna(0).astype(int) if "repeat" in df.columns else 0  # older: one run
        if "engine" not in df.columns:  # a run's own results.csv
            df = df.assign(source=str(f), engine=df.backend)
            label = run_label(f.parent)
            if label:
                df["backend"] = label
            if "quant" in df.columns:
                df["backend"] = [with_quant(b, q) for b, q in zip(df.backend, df.quant)]
        frames.append(df)
    if not frames:
        raise UserError(f"none of the {len(files)} results file(s) given is a readable enginebench results.csv "
                        "(each is named above)", "give the tidy results.csv files that enginebench runs wrote")
    return pd.concat(frames, ignore_index=True)


REQUIRED_COLUMNS = ("metric", "backend", "status", *CELL)
NUMERIC_COLUMNS = ("batch_size", "prompt_len", "new_tokens")  # every row has them; statistics may be empty


def _usable_results(f: Path) -> pd.DataFrame | None:
    """The whole cells of one results file, or None (said in one line) when it is not a results.csv we can read:
    garbage, a summary or comparison file, columns missing, cell columns that are not numbers."""
    try:
        df, skipped = read_results_frame(f)
    except UserError as err:
        say_skipped(f"{f}: {err.problem}")
        return None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        say_skipped(f"{f}: unreadable ({type(exc).__name__})")
        return None
    if skipped:  # a run killed mid-write (or a full disk): its whole cells are still worth reporting
        say_skipped(f"{skipped} in {f}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        say_skipped(f"{f}: not an enginebench results.csv (no {', '.join(missing)} column); give the tidy "
                    "results.csv files, not summary.csv or comparison.csv")
        return None
    for column in NUMERIC_COLUMNS:
        numbers = pd.to_numeric(df[column], errors="coerce")
        if numbers.isna().any():
            say_skipped(f"{f}: column {column} holds values that are not numbers")
            return None
        df[column] = numbers.astype(int)
    stats = [c for c in ("p50", "mean", "std", "min", "max", "p10", "p90", "ci_low", "ci_high") if c in df.columns]
    for column in stats:
        numbers = pd.to_numeric(df[column], errors="coerce")
        if (numbers.isna() & df[column].notna()).any():
            say_skipped(f"{f}: column {column} holds values that are not numbers")
            return None
        df[column] = numbers
    return df


def latest_per_cell(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, configuration, metric): the last input wins (see :func:`repeated_cells`). Repeats of one
    run (``measure.repeats``) are combined by harness/report/repeats.py instead."""
    return tidy.drop_duplicates(subset=CELL + ["backend", "metric"], keep="last")


def repeated_cells(tidy: pd.DataFrame) -> pd.DataFrame:
    """Cells of one configuration measured in more than one input: configuration, cell, runs, the one shown."""
    if "source" not in tidy.columns:
        return pd.DataFrame()
    per_cell = tidy.drop_duplicates(subset=CELL + ["backend", "source"])
    if "repeat" in per_cell.columns:  # runs holding the same repeat number: only then is one shown over another
        per_cell = per_cell[per_cell.duplicated(CELL + ["backend", "repeat"], keep=False)]
    groups = per_cell.groupby(CELL + ["backend"], dropna=False).source
    counts = groups.nunique()
    repeated = counts[counts > 1]
    if repeated.empty:
        return pd.DataFrame()
    shown = groups.last()[repeated.index]
    return pd.DataFrame({"runs": repeated, "shown": shown}).reset_index()


def cell_samples(tidy_row) -> dict | None:
    """The kept samples of the cell behind one tidy row, or None (an older run, or a row without a source)."""
    source = getattr(tidy_row, "source", None) if not isinstance(tidy_row, dict) else tidy_row.get("source")
    if not isinstance(source, str) or not source:
        return None
    get = tidy_row.get if isinstance(tidy_row, dict) else lambda k: getattr(tidy_row, k, None)
    repeat = get("repeat")
    return _read_samples(str(Path(source).parent), int(get("batch_size")), int(get("prompt_len")),
                         int(get("new_tokens")), int(repeat) if repeat is not None and pd.notna(repeat) else 0)


@lru_cache(maxsize=4096)
def _read_samples(run_dir: str, batch: int, prompt_len: int, new_tokens: int, repeat: int = 0):
    return read_cell_samples(Path(run_dir), batch, prompt_len, new_tokens, repeat)


def run_infos(paths: list[str | Path]) -> list[dict]:
    infos = []
    for f in result_files(paths):
        info = read_run_info(f.parent)
        if info is not None:
            info["_configuration"] = label_of_run(info)
            info["_dir"] = str(f.parent)
            infos.append(info)
    return infos


def validation_files(paths: list[str | Path]) -> list[Path]:
    """Every validation.csv under ``paths``, including runs that validated and measured nothing (``task=validate``,
    or a benchmark stopped after its validation): a report may pair those with speed runs made without validation."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("validation.csv") if "report" not in f.parts))
        elif (p.parent / "validation.csv").exists():
            found.append(p.parent / "validation.csv")
    return list(dict.fromkeys(found))


def validations(paths: list[str | Path]) -> pd.DataFrame:
    """All validation rows; ``configuration`` is the run's configuration label with its quantization scheme, the
    label its result rows carry (:func:`load_results`), so accuracy can be joined to speed by configuration."""
    frames = []
    for f in validation_files(paths):
        try:
            df = pd.read_csv(f)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            say_skipped(f"{f}: unreadable ({type(exc).__name__})")
            continue
        if "backend" not in df.columns:
            say_skipped(f"{f}: not an enginebench validation.csv (no backend column)")
            continue
        label = run_label(f.parent)
        quant = df["quant"] if "quant" in df.columns else ["none"] * len(df)
        df["configuration"] = [with_quant(label or b, q) for b, q in zip(df.backend, quant)]
        df["source"] = str(f)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def configuration_pivot(tidy: pd.DataFrame, metric: str, stat: str = "p50") -> pd.DataFrame:
    """Cells as rows, one column per (configuration, run): the table a notebook shows. Never pools: a cell and
    column with more than one value is an error, and runs of one configuration stay in separate columns."""
    rows = tidy[tidy.metric == metric].copy()
    if "source" in rows.columns:
        runs = rows.groupby("backend").source.transform("nunique")
        run_name = rows.source.map(lambda s: Path(s).parent.name)
        rows["configuration"] = rows.backend.where(runs <= 1, rows.backend + " @ " + run_name)
    else:
        rows["configuration"] = rows.backend
    index = [c for c in ("model", "dtype", "device", "batch_size", "prompt_len") if rows[c].nunique() > 1 or
             c in ("batch_size", "prompt_len")]
    dup = rows.duplicated(subset=index + ["configuration", "new_tokens", "weights"], keep=False)
    if dup.any():
        raise UserError(f"{int(dup.sum())} rows of {metric} share a cell and a configuration",
                        "give each run once; runs of one configuration are shown side by side, not averaged")
    return rows.pivot(index=index, columns="configuration", values=stat)
