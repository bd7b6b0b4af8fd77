"""Find and merge tidy results from run directories, multirun directories or CSV files (any mix, any machine)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.errors import UserError


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


def load_results(paths: list[str | Path]) -> pd.DataFrame:
    """All tidy rows, one frame; ``source`` says which file each row came from."""
    frames = []
    for f in result_files(paths):
        df = pd.read_csv(f)
        if "metric" not in df.columns or "backend" not in df.columns:
            raise UserError(f"{f} is not an enginebench results.csv (no metric/backend columns)",
                            "give the tidy results.csv files, not summary.csv or comparison.csv")
        frames.append(df.assign(source=str(f)))
    return pd.concat(frames, ignore_index=True)


def run_infos(paths: list[str | Path]) -> list[dict]:
    infos = []
    for f in result_files(paths):
        run_json = f.parent / "run.json"
        if run_json.exists():
            infos.append(json.loads(run_json.read_text()))
    return infos


def validations(paths: list[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(f.parent / "validation.csv") for f in result_files(paths)
              if (f.parent / "validation.csv").exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
