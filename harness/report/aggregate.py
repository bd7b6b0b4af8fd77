"""Find and merge tidy results from run directories, multirun directories or CSV files (any mix, any machine)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.results import read_results_frame


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


def backend_label(backend: str, options: dict, defaults: dict) -> str:
    """The backend's name plus the options that differ from its defaults: ``hf-...[compile=reduce-overhead]``,
    so that two configurations of one backend stay apart in comparisons and plots."""
    changed = [f"{k}={v}" for k, v in options.items() if k != "name" and k in defaults and defaults[k] != v]
    return f"{backend}[{','.join(changed)}]" if changed else backend


def _defaults_of(backend: str) -> dict:
    try:
        from harness.plugins import PluginRegistry

        registry = _defaults_of.registry = getattr(_defaults_of, "registry", None) or PluginRegistry.discover()
        return registry.defaults(backend)
    except Exception:  # noqa: BLE001 - a backend not installed here: label without options
        return {}


def load_results(paths: list[str | Path]) -> pd.DataFrame:
    """All tidy rows, one frame; ``source`` says which file each row came from, ``engine`` the backend and
    ``backend`` its label (name plus non-default options, read from the run.json beside the file)."""
    frames = []
    for f in result_files(paths):
        df, skipped = read_results_frame(f)
        if skipped:  # a run killed mid-write (or a full disk): its whole cells are still worth reporting
            print(f"enginebench-report: skipped {skipped} in {f}", file=sys.stderr)
        if "metric" not in df.columns or "backend" not in df.columns:
            raise UserError(f"{f} is not an enginebench results.csv (no metric/backend columns)",
                            "give the tidy results.csv files, not summary.csv or comparison.csv")
        df = df.assign(source=str(f), engine=df.backend)
        run_json = f.parent / "run.json"
        if run_json.exists():
            options = json.loads(run_json.read_text()).get("config", {}).get("backend", {})
            if options.get("name"):
                df["backend"] = backend_label(options["name"], options, _defaults_of(options["name"]))
        frames.append(df)
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
