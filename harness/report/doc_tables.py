"""Tables in the documentation made from committed results, and the check that they still say what the results say.

A generated table sits in a Markdown file between two fences::

    <!-- table: NAME -->
    | ... the table, then one line naming its sources ... |
    <!-- /table -->

and ``NAME`` is defined in ``docs/tables.yaml`` (the file given by ``--tables``): the run directories it reads
(results.csv, run.json and samples, committed under docs/results/), the cells it keeps, and how they are laid out::

    decode-b1-p128:
      runs: [docs/results/h100/hf_compile_reduce-overhead, docs/results/h100/ort_gqa_fused_cudagraph]
      where: {batch_size: 1, prompt_len: 128}   # optional: keep only these cells
      rows: [backend, batch_size, prompt_len]   # one table row per distinct value of these columns
      values: {"decode p50 (ms)": decode_latency_ms:p50, "GPU": gpu}
      digits: 2                                 # decimals of every number (default 2; "metric:stat@N" for one value)

or, for a grid, ``pivot: {rows: [batch_size, prompt_len], columns: backend, value: decode_latency_ms:p50}``
(with ``names: {label: header}`` for shorter column headers).
Besides ``metric:stat``, a value may be ``gpu`` / ``gpu_uuid`` (from run.json) or ``timing`` (what the run's samples say
they measured: ``sustained``, or ``device-unsynced`` for runs timed before the sustained clock, see
harness/record/samples.py). ``backend`` is the configuration label, as in every report.

``make-docs FILE...`` rewrites every fenced table from its sources; ``check-docs FILE...`` rebuilds them in
memory and names every number (every cell) that differs from its source, and every table whose name is not
defined or whose sources are missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from harness.errors import UserError

FENCE = re.compile(r"<!-- table: (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /table -->", re.S)
DEFAULT_TABLES = Path("docs/tables.yaml")
RUN_FACTS = ("gpu", "gpu_uuid", "timing", "run")  # values read from a run's run.json and samples, not from a metric
# ("run": the run's directory as the definition names it, a row key where two runs share a configuration)


@dataclass
class Difference:
    """One place where a document disagrees with its source."""

    file: str
    table: str
    where: str
    document: str
    source: str

    def __str__(self) -> str:
        return f"{self.file}: table {self.table}, {self.where}: the document says {self.document!r}, " \
               f"the results say {self.source!r}"


def load_definitions(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"no table definitions at {path}", "give --tables FILE (docs/tables.yaml in the repository)")
    return yaml.safe_load(path.read_text()) or {}


def _run_facts(run_dir: Path) -> dict[str, str]:
    """What a value of kind ``gpu`` / ``timing`` shows for one run."""
    import json

    from harness.record.samples import OLD_TIMING, SAMPLES_DIR

    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        info = {}
    timing = OLD_TIMING
    for f in sorted((run_dir / SAMPLES_DIR).glob("*.npz")):
        import numpy as np

        with np.load(f, allow_pickle=False) as data:
            timing = json.loads(str(data["meta"])).get("timing", OLD_TIMING)
        break
    env = info.get("environment", {})
    return {"gpu": env.get("gpu_name") or "cpu", "gpu_uuid": env.get("gpu_uuid") or "—", "timing": timing}


def _frame(definition: dict, root: Path) -> pd.DataFrame:
    from harness.report.aggregate import load_results

    runs = [root / r for r in definition["runs"]]
    missing = [str(r) for r in runs if not (r / "results.csv").exists()]
    if missing:
        raise FileNotFoundError(f"no results.csv in {', '.join(missing)}")
    frames = []
    for name, run in zip(definition["runs"], runs):
        df = load_results([run])
        for key, value in _run_facts(run).items():
            df[key] = value
        df["run"] = name
        frames.append(df)
    tidy = pd.concat(frames, ignore_index=True)
    tidy = tidy[tidy.status == "ok"]
    for column, wanted in (definition.get("where") or {}).items():
        wanted = wanted if isinstance(wanted, list) else [wanted]
        tidy = tidy[tidy[column].astype(str).isin([str(w) for w in wanted])]
    return tidy


def _value(cells: pd.DataFrame, spec: str, digits: int) -> str:
    if spec in RUN_FACTS:
        values = cells[spec].dropna().unique()
        return ", ".join(sorted(str(v) for v in values)) or "—"
    spec, _, own_digits = spec.partition("@")  # "metric:stat@N": this value with N decimals
    digits = int(own_digits) if own_digits else digits
    metric, _, stat = spec.partition(":")
    rows = cells[cells.metric == metric]
    if rows.empty:
        return "—"
    if len(rows) > 1:  # never averaged: one run per cell and configuration (harness/report/aggregate.py)
        raise UserError(f"{len(rows)} rows of {metric} for one table cell",
                        "narrow the table's runs or 'where' so that every cell has one source")
    return f"{float(rows.iloc[0][stat or 'p50']):,.{digits}f}"


def render(name: str, definition: dict, root: Path) -> str:
    """The fenced body of table ``name``: the Markdown table and the line that names its sources."""
    tidy = _frame(definition, root)
    digits = int(definition.get("digits", 2))
    if "pivot" in definition:
        pivot = definition["pivot"]
        keys, across = list(pivot["rows"]), pivot["columns"]
        columns = list(dict.fromkeys(tidy[across]))
        names = pivot.get("names") or {}  # a shorter header for a column value (a long configuration label)
        header = [*keys, *(names.get(c, c) for c in columns)]
        body = []
        for key, cells in tidy.groupby(keys, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            body.append([*map(str, key), *(_value(cells[cells[across] == c], pivot["value"], digits)
                                            for c in columns)])
    else:
        keys, values = list(definition["rows"]), definition["values"]
        header = [*keys, *values]
        body = []
        for key, cells in tidy.groupby(keys, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            body.append([*map(str, key), *(_value(cells, spec, digits) for spec in values.values())])
    if not body:
        raise FileNotFoundError(f"no finished cell of table {name} in its runs")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    sources = ", ".join(f"`{r}`" for r in definition["runs"])
    lines += ["", f"Source: {sources} (results.csv, run.json; table `{name}` of docs/tables.yaml)."]
    return "\n".join(lines) + "\n"


def _cells(body: str) -> dict[tuple[int, int], str]:
    """(row, column) -> text of every cell of the Markdown table in ``body`` (the header is row 0)."""
    rows = [line for line in body.splitlines() if line.startswith("|") and not re.match(r"^\|[-|: ]+\|$", line)]
    return {(i, j): cell.strip() for i, line in enumerate(rows)
            for j, cell in enumerate(line.strip().strip("|").split("|"))}


def _differences(file: str, name: str, document: str, source: str) -> list[Difference]:
    doc, src = _cells(document), _cells(source)
    header = {j: text for (i, j), text in src.items() if i == 0}
    out = []
    for key in sorted(set(doc) | set(src)):
        if doc.get(key) != src.get(key):
            row, col = key
            label = src.get((row, 0)) or doc.get((row, 0)) or f"row {row}"
            where = "header" if row == 0 else f"row '{label}', column '{header.get(col, col)}'"
            out.append(Difference(file, name, where, doc.get(key, "(missing)"), src.get(key, "(missing)")))
    if not out and document.strip() != source.strip():
        out.append(Difference(file, name, "sources line", document.strip().splitlines()[-1],
                              source.strip().splitlines()[-1]))
    return out


def check_file(path: Path, definitions: dict, root: Path) -> list[Difference]:
    text = Path(path).read_text()
    out = []
    for m in FENCE.finditer(text):
        name = m["name"]
        if name not in definitions:
            out.append(Difference(str(path), name, "definition", "(fenced)", "(not defined in the tables file)"))
            continue
        try:
            fresh = render(name, definitions[name], root)
        except FileNotFoundError as exc:
            out.append(Difference(str(path), name, "sources", "(fenced)", str(exc)))
            continue
        out += _differences(str(path), name, m["body"], fresh)
    return out


def make_file(path: Path, definitions: dict, root: Path) -> int:
    """Rewrite every fenced table of ``path`` from its sources; returns how many."""
    text = Path(path).read_text()
    count = 0

    def fill(m: re.Match) -> str:
        nonlocal count
        if m["name"] not in definitions:
            raise UserError(f"{path}: table {m['name']} is not defined", "define it in docs/tables.yaml")
        count += 1
        return f"<!-- table: {m['name']} -->\n{render(m['name'], definitions[m['name']], root)}<!-- /table -->"

    new = FENCE.sub(fill, text)
    if new != text:
        Path(path).write_text(new)
    return count


def main(argv: list[str], command: str) -> int:
    """``enginebench-report check-docs|make-docs [--tables FILE] [--root DIR] FILE...``"""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog=f"enginebench-report {command}", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="Markdown files with fenced tables (README.md docs/*.md)")
    p.add_argument("--tables", default=None, help="table definitions (default: ROOT/docs/tables.yaml)")
    p.add_argument("--root", default=".", help="the directory the definitions' run paths are relative to")
    args = p.parse_args(argv)
    root = Path(args.root)
    definitions = load_definitions(Path(args.tables) if args.tables else root / DEFAULT_TABLES)
    missing = [f for f in args.files if not Path(f).exists()]
    if missing:
        raise UserError(f"no such file: {', '.join(missing)}", "give Markdown files that exist")
    if command == "make-docs":
        for f in args.files:
            print(f"{f}: {make_file(Path(f), definitions, root)} table(s) made")
        return 0
    differences = [d for f in args.files for d in check_file(Path(f), definitions, root)]
    for d in differences:
        print(d)
    tables = sum(len(FENCE.findall(Path(f).read_text())) for f in args.files)
    print(f"check-docs: {tables} table(s) in {len(args.files)} file(s), {len(differences)} difference(s)",
          file=sys.stderr)
    return 1 if differences else 0
