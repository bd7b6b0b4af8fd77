"""``enginebench-report``: merge results into comparison.csv, plots and report.md; or compare two result sets.

    enginebench-report PATH... [--out DIR] [--baseline NAME] [--no-plots]
    enginebench-report compare OLD NEW [--wide] [--min-effect 0.05] [--fail-on-regression [--allow-unstable]]
                                       [--out FILE]
    enginebench-report --version
    enginebench-report check-docs|make-docs FILE... (tables in the docs made from results: doc_tables.py)
    enginebench-report why A B (the decode-step diff of two measure.profile=true runs: docs/profiling.md)

Exit status: 0 done; 1 ``compare --fail-on-regression`` found a regression (or a cell that failed in NEW, or a cell
it could not judge: unstable or untested, unless ``--allow-unstable``), or ``check-docs`` found a number in a document
that differs from its source; 2 bad input (no results, a baseline not in the results, two result sets with no cell in
common, a test option out of range).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_USER_ERROR, UserError
from harness.measure.stats import ALPHA, CONFIDENCE, MAX_CV, MIN_EFFECT, MIN_N
from harness.record.replicated import ALPHA_BETWEEN_RUNS
from harness.record.results import atomic_write_text

VERDICT_HELP = (f"Verdicts (docs/statistics.md): with >= 2 repeats a side (measure.repeats), 'faster'/'slower' "
                f"when the (1 - alpha) interval (alpha {ALPHA_BETWEEN_RUNS}) of the ratio, from a two-level "
                f"bootstrap over runs and iterations, excludes 1 and the change is at least the minimum effect; "
                f"with one run a side an exact rank test at --alpha (default {ALPHA}) and the verdict says 'within "
                f"this run'. Sides with fewer than --min-n (default {MIN_N}) samples or a CV above --max-cv "
                f"(default {MAX_CV}) are 'unstable'. Intervals of medians: {CONFIDENCE:.0%}.")


USAGE = ("\n  enginebench-report PATH... [--out DIR] [--baseline NAME] [--no-plots] [options]"
         "\n  enginebench-report compare OLD NEW [--wide] [--min-effect E] [--fail-on-regression [--allow-unstable]]"
         " [--out FILE]"
         "\n  enginebench-report check-docs|make-docs FILE..."
         "\n  enginebench-report why A B"
         "\n  enginebench-report --version")


def build_report(paths: list[str], out_dir: Path, baseline: str | None = None, plots: bool = True,
                 test_options: dict | None = None) -> dict[str, Path]:
    """Merge ``paths`` into ``out_dir``: results.csv, comparison.csv, plots/ and report.md.

    ``baseline``: a configuration label (or a backend with one configuration here); None = the default HF
    configuration if present. A baseline that is not in the results is a UserError naming what is there."""
    from harness.record.labels import resolve_baseline
    from harness.report.aggregate import (
        load_results,
        repeated_cells,
        run_infos,
        validations,
    )
    from harness.report.comparison import comparison_table
    from harness.report.markdown import write_report
    from harness.report.plots import config_colors, make_plots
    from harness.report.speed_accuracy import speed_accuracy_plot, speed_accuracy_table

    tidy = load_results(paths)
    baseline = resolve_baseline(sorted(tidy.backend.unique()), baseline)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.csv", tidy.to_csv(index=False))
    comparison = comparison_table(tidy, baseline, test_options)
    atomic_write_text(out_dir / "comparison.csv", comparison.to_csv(index=False))
    validation = validations(paths)
    speed_accuracy = speed_accuracy_table(tidy, validation)
    colors = config_colors(tidy.backend.unique())  # one colour per configuration in every plot
    pngs = make_plots(tidy, out_dir / "plots", colors) if plots else []
    pngs += speed_accuracy_plot(speed_accuracy, out_dir / "plots", colors) if plots else []
    from harness.report.markdown import markdown_table
    from harness.report.where_time_goes import where_time_goes

    time_goes = where_time_goes(tidy, baseline, out_dir / "plots" if plots else None, out_dir, markdown_table)
    write_report(out_dir / "report.md", tidy, comparison, run_infos(paths), validation, pngs, baseline,
                 [str(p) for p in paths], repeated_cells(tidy), test_options,
                 speed_accuracy=speed_accuracy, where_time_goes=time_goes)
    return {"results": out_dir / "results.csv", "comparison": out_dir / "comparison.csv",
            "report": out_dir / "report.md", "plots": out_dir / "plots"}


def writable_dir(out: Path) -> None:
    """Refuse (one line, exit 2) an output folder that cannot be created or written, before any work."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise UserError(f"cannot write the report into {out} ({exc.strerror or type(exc).__name__})",
                        "give --out DIR, a folder you can write") from exc


def _add_test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=float, default=None,
                   help=f"significance level of the verdict (default {ALPHA} within a run, {ALPHA_BETWEEN_RUNS} "
                        "between runs)")
    p.add_argument("--min-n", type=int, default=MIN_N, help=f"fewer samples: unstable (default {MIN_N})")
    p.add_argument("--max-cv", type=float, default=MAX_CV, help=f"larger CV: unstable (default {MAX_CV})")


def _test_options(args) -> dict:
    """The verdict's options, checked: out of range is a UserError (one line, exit 2), not a silent odd verdict."""
    options = {"alpha": args.alpha, "min_n": args.min_n, "max_cv": args.max_cv}
    if getattr(args, "min_effect", None) is not None:
        options["min_effect"] = args.min_effect
    if options["alpha"] is not None and not 0 < options["alpha"] < 1:
        raise UserError(f"--alpha {options['alpha']:g} is not a probability between 0 and 1",
                        f"use e.g. --alpha {ALPHA}")
    if not 0 <= options.get("min_effect", 0) < 1:
        raise UserError(f"--min-effect {options['min_effect']:g} is not a fraction in [0, 1)",
                        f"use e.g. --min-effect {MIN_EFFECT} (changes of at least 5 %)")
    if options["min_n"] < 2:
        raise UserError(f"--min-n {options['min_n']} is below 2", f"use e.g. --min-n {MIN_N}")
    if not options["max_cv"] > 0:
        raise UserError(f"--max-cv {options['max_cv']:g} is not positive", f"use e.g. --max-cv {MAX_CV}")
    return options


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enginebench-report compare", epilog=VERDICT_HELP,
                                description="Cells whose latency moved beyond noise between two result sets.")
    p.add_argument("old", help="run dir, multirun dir or results.csv measured first")
    p.add_argument("new", help="the one to judge against OLD")
    p.add_argument("--min-effect", "--threshold", dest="min_effect", type=float, default=MIN_EFFECT,
                   help=f"smallest relative change of the median that counts (default {MIN_EFFECT})")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 when any cell regressed or failed in NEW, or could not be judged (unstable, "
                        "untested)")
    p.add_argument("--allow-unstable", action="store_true",
                   help="with --fail-on-regression: let unstable and untested cells pass")
    p.add_argument("--out", default=None, help="write the comparison as CSV")
    p.add_argument("--wide", action="store_true",
                   help="every column, unrounded, and every cell (default: at most 100 columns, moved cells only)")
    _add_test_options(p)
    return p


def _compare(argv: list[str]) -> int:
    from harness.report.aggregate import load_results, run_infos
    from harness.report.compare_table import machine_line, render
    from harness.report.regression import compare_runs, environment_differences

    args = compare_parser().parse_args(argv)
    old, new = load_results([args.old]), load_results([args.new])
    options = _test_options(args)
    table = compare_runs(old, new, options.pop("min_effect"), **options)
    for line in environment_differences(run_infos([args.old]), run_infos([args.new])):
        print(f"warning: the runs differ in {line}", file=sys.stderr)
    if args.out:
        atomic_write_text(Path(args.out), table.to_csv(index=False))
    shown = table if args.wide else table[~table.verdict.isin(["within noise"])]
    print(render(shown, args.wide) if len(shown) else f"all {len(table)} matched cells within noise")
    if len(shown) < len(table):
        print(f"({len(table) - len(shown)} within noise not shown; --wide shows every cell)")
    warning = machine_line(old, new)
    if warning:
        print(warning, file=sys.stderr)
    counts = table.verdict.value_counts().to_dict()
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())), file=sys.stderr)
    from harness.report.gate import gate_failures

    failures = gate_failures(table, allow_unstable=args.allow_unstable)
    if args.fail_on_regression:
        for line in failures:
            print(f"gate: {line}", file=sys.stderr)
    return 1 if args.fail_on_regression and failures else 0


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="enginebench-report", formatter_class=argparse.RawDescriptionHelpFormatter, usage=USAGE,
        description=__doc__.split("\n\n")[0].replace("``", ""),
        epilog="commands:\n  compare OLD NEW       cells whose latency moved beyond noise between two result sets\n"
               "                        (enginebench-report compare --help)\n"
               "  check-docs FILE...    exit 1 naming every number of a generated table that differs from its\n"
               "                        source; make-docs FILE... rewrites the tables\n"
               "  why A B               where two profiled runs' decode steps differ (docs/profiling.md)\n\n"
               + VERDICT_HELP)
    p.add_argument("paths", nargs="+", help="run dirs, multirun dirs or results.csv files")
    p.add_argument("--out", default=None, help="output directory (default: <first path>/report)")
    p.add_argument("--baseline", default=None,
                   help="configuration the speedups are measured against, as labelled in the results "
                        "(default: hf-flashattn-staticcache when present)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--min-effect", type=float, default=MIN_EFFECT,
                   help=f"smallest relative change of the median that counts (default {MIN_EFFECT})")
    _add_test_options(p)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--version", "-V"):
        from harness.version import version_text

        print(version_text())
        sys.exit(0)
    try:
        if argv and argv[0] == "compare":
            sys.exit(_compare(argv[1:]))
        if argv and argv[0] == "why":
            from harness.report.where_time_goes import why

            args = argparse.ArgumentParser(prog="enginebench-report why", description="The decode-step diff (B minus "
                                           "A) by category and kernel of the cells two profiled runs share.")
            args.add_argument("a", help="run directory of a measure.profile=true run")
            args.add_argument("b", help="the other run directory")
            parsed = args.parse_args(argv[1:])
            print(why(parsed.a, parsed.b))
            sys.exit(0)
        if argv and argv[0] in ("check-docs", "make-docs"):  # tables in the docs made from results
            from harness.report.doc_tables import main as docs_main

            sys.exit(docs_main(argv[1:], argv[0]))
        args = report_parser().parse_args(argv)
        first = Path(args.paths[0])
        out = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "report"
        options = _test_options(args)  # checked before anything is written
        writable_dir(out)
        written = build_report(args.paths, out, args.baseline, not args.no_plots, options)
        for name, path in written.items():
            print(f"{name}: {path}")
    except UserError as err:
        print(err.one_line(), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
