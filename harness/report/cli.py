"""``enginebench-report``: merge results into comparison.csv, plots and report.md; or compare two result sets.

    enginebench-report PATH... [--out DIR] [--baseline NAME] [--no-plots]
    enginebench-report compare OLD NEW [--threshold 0.05] [--fail-on-regression] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_USER_ERROR, UserError
from harness.results import atomic_write_text


def build_report(paths: list[str], out_dir: Path, baseline: str = "hf-flashattn-staticcache",
                 plots: bool = True) -> dict[str, Path]:
    from harness.report.aggregate import load_results, run_infos, validations
    from harness.report.comparison import comparison_table
    from harness.report.markdown import write_report
    from harness.report.plots import make_plots

    tidy = load_results(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.csv", tidy.to_csv(index=False))
    comparison = comparison_table(tidy, baseline)
    atomic_write_text(out_dir / "comparison.csv", comparison.to_csv(index=False))
    pngs = make_plots(tidy, out_dir / "plots") if plots else []
    write_report(out_dir / "report.md", tidy, comparison, run_infos(paths), validations(paths), pngs, baseline,
                 [str(p) for p in paths])
    return {"results": out_dir / "results.csv", "comparison": out_dir / "comparison.csv",
            "report": out_dir / "report.md", "plots": out_dir / "plots"}


def _compare(argv: list[str]) -> int:
    from harness.report.aggregate import load_results
    from harness.report.regression import compare_runs

    p = argparse.ArgumentParser(prog="enginebench-report compare")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--threshold", type=float, default=0.05, help="relative change that counts (default 0.05)")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any cell regressed")
    p.add_argument("--out", default=None, help="write the comparison as CSV")
    args = p.parse_args(argv)
    table = compare_runs(load_results([args.old]), load_results([args.new]), args.threshold)
    if args.out:
        atomic_write_text(Path(args.out), table.to_csv(index=False))
    moved = table[table.verdict.isin(["regression", "improvement"])]
    cols = ["backend", "batch_size", "prompt_len", "metric", "p50_old", "p50_new", "change", "verdict"]
    print(moved[cols].to_string(index=False) if len(moved) else "no cell moved beyond noise")
    counts = table.verdict.value_counts().to_dict()
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    return 1 if args.fail_on_regression and counts.get("regression", 0) else 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "compare":
            sys.exit(_compare(argv[1:]))
        p = argparse.ArgumentParser(prog="enginebench-report", description=__doc__.splitlines()[0])
        p.add_argument("paths", nargs="+", help="run dirs, multirun dirs or results.csv files")
        p.add_argument("--out", default=None, help="output directory (default: <first path>/report)")
        p.add_argument("--baseline", default="hf-flashattn-staticcache")
        p.add_argument("--no-plots", action="store_true")
        args = p.parse_args(argv)
        first = Path(args.paths[0])
        out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "report"
        written = build_report(args.paths, out, args.baseline, not args.no_plots)
        for name, path in written.items():
            print(f"{name}: {path}")
    except UserError as err:
        print(err.one_line(), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
