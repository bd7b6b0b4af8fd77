"""How often the verdict rules call a difference between runs of one configuration, measured on real repeats.

Input: a multirun of two configurations A and B with ``measure.repeats=K`` (K >= 6; their repeats interleaved, see
harness/run/repeats.py). Everything below uses the report's own functions on the kept samples; nothing is timed here.

- A/A, old rule (the verdict before repeats: a two-sided Mann-Whitney test on the iterations of one run a side at
  alpha 0.01 plus the 5 % minimum effect): every pair of A's repeats (K(K-1)/2 pairs), and the same for B.
- A/A, within-run rule now (harness/measure/stats.py: exact rank test, interval excluding 1, minimum effect):
  same pairs.
- A/A, between-runs rule (harness/record/replicated.py): disjoint random splits of A's repeats into 3 vs 3 runs (and 5
  vs 5 when K >= 10), ``--splits`` of each, and the same for B.
- A/B: all of A's repeats against all of B's with the between-runs rule: verdict, ratio, interval, resolution.

    python -m tools.repeat_evidence SWEEP_DIR --out OUT_DIR [--a LABEL] [--splits 200]

Writes OUT_DIR/evidence.csv (one row per metric, cell, rule and comparison), OUT_DIR/evidence.md, and the sweep's
report (OUT_DIR/report/: report.md says the order the repeats were loaded in).
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from harness.measure.stats import ALPHA, MIN_EFFECT, compare_samples
from harness.record.results import atomic_write_text
from harness.report.aggregate import CELL, load_results, run_infos
from harness.report.comparison import TESTED
from harness.report.repeats import combine_repeats, judge, repeat_order, repeat_rows, run_units

SEED = 0


def old_rule(a: np.ndarray, b: np.ndarray) -> bool:
    """The verdict before repeats (harness/measure/stats.py at the time): Mann-Whitney (scipy's default method) on the
    iterations of one run a side at alpha 0.01, and a change of the medians of at least 5 %."""
    from scipy.stats import mannwhitneyu

    ratio = np.median(b) / np.median(a)
    return bool(mannwhitneyu(a, b, alternative="two-sided").pvalue < ALPHA and abs(ratio - 1) >= MIN_EFFECT)


def disjoint_splits(k: int, size: int, count: int, seed: int = SEED) -> list[tuple[list[int], list[int]]]:
    """``count`` random pairs of disjoint ``size``-subsets of range(k) (seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        order = rng.permutation(k)
        out.append((sorted(order[:size].tolist()), sorted(order[size:2 * size].tolist())))
    return out


def aa_rows(label: str, runs: list[np.ndarray], where: dict, splits: int) -> list[dict]:
    """False-verdict rates of every rule on runs of one configuration (a verdict there is always false)."""
    rows = []
    pairs = list(itertools.combinations(range(len(runs)), 2))
    for rule, called in (("old: Mann-Whitney, one run a side", lambda i, j: old_rule(runs[i], runs[j])),
                         ("within run (now)", lambda i, j: compare_samples(runs[i], runs[j]).verdict
                          not in ("within noise", "unstable"))):
        hits = sum(called(i, j) for i, j in pairs)
        rows.append({**where, "comparison": f"A/A {label}", "rule": rule, "runs_a_side": 1, "pairs": len(pairs),
                     "verdicts": hits, "rate": hits / len(pairs) if pairs else np.nan})
    for size in (2, 3, 5):  # 2 a side: the least the between-runs rule takes (a short sitting)
        if 2 * size > len(runs):
            continue
        verdicts = [judge([runs[i] for i in a], [runs[i] for i in b]).verdict
                    for a, b in disjoint_splits(len(runs), size, splits)]
        hits = sum(v not in ("within noise", "unstable") for v in verdicts)
        rows.append({**where, "comparison": f"A/A {label}", "rule": "between runs (now)", "runs_a_side": size,
                     "pairs": len(verdicts), "verdicts": hits, "rate": hits / len(verdicts),
                     "unstable": sum(v == "unstable" for v in verdicts)})
    return rows


def labels(tidy: pd.DataFrame, a_label: str | None) -> tuple[str, str]:
    configs = sorted(tidy.backend.unique())
    if len(configs) != 2 or (a_label is not None and a_label not in configs):
        raise SystemExit(f"expected two configurations (A given by --a) in these results, found {configs}")
    a_label = a_label or configs[0]
    return a_label, next(c for c in configs if c != a_label)


def evidence(tidy: pd.DataFrame, a_label: str, b_label: str, splits: int) -> pd.DataFrame:
    combined = combine_repeats(tidy[tidy.metric.isin(TESTED.values())])
    rows = []
    for _, group in combined.groupby(CELL + ["metric"], sort=True):
        where = {k: group.iloc[0][k] for k in CELL + ["metric"]}
        by_config = {r["backend"]: run_units(repeat_rows(r), r["metric"]) for r in group.to_dict("records")}
        runs_a, runs_b = by_config.get(a_label), by_config.get(b_label)
        if not runs_a or not runs_b:
            continue
        rows += aa_rows(f"({a_label})", runs_a, where, splits) + aa_rows(f"({b_label})", runs_b, where, splits)
        v = judge(runs_a, runs_b)
        rows.append({**where, "comparison": f"A/B ({b_label} vs {a_label})", "rule": "between runs (now)",
                     "runs_a_side": len(runs_a), "pairs": 1, "verdicts": int(v.verdict in ("higher", "lower")),
                     "verdict": v.verdict, "ratio": v.ratio, "ratio_ci_low": v.ratio_ci_low,
                     "ratio_ci_high": v.ratio_ci_high, "resolves": v.resolves, "p_value": v.p_value})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, order: list[str], command: str) -> str:
    from harness.report.markdown import markdown_table

    totals = table[table.comparison.str.startswith("A/A")].groupby(["rule", "runs_a_side"])[["pairs", "verdicts"]] \
        .sum().reset_index()
    totals["rate"] = totals.verdicts / totals.pairs
    ab = table[table.comparison.str.startswith("A/B")]
    cols = [c for c in ("batch_size", "prompt_len", "metric", "runs_a_side", "verdict", "ratio", "ratio_ci_low",
                        "ratio_ci_high", "resolves") if c in ab]
    return "\n".join(["# Verdicts on repeated runs", "", f"Command: `{command}`", "", *order,
                      "## A/A: false verdicts between repeats of one configuration (all cells and metrics)", "",
                      markdown_table(totals), "", "## A/B: the two configurations, every repeat a side", "",
                      markdown_table(ab[cols]), "", "Per cell: evidence.csv.", ""])


def main(argv: list[str] | None = None) -> None:
    import sys

    p = argparse.ArgumentParser(prog="python -m tools.repeat_evidence", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", help="the multirun directory (two configurations, measure.repeats=K)")
    p.add_argument("--out", required=True, help="directory for evidence.csv, evidence.md and report/")
    p.add_argument("--a", default=None, help="configuration A's label (default: the first in sorted order)")
    p.add_argument("--splits", type=int, default=200, help="random disjoint splits per size for the A/A rates")
    args = p.parse_args(argv)
    from harness.report.cli import build_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tidy = load_results([args.sweep])
    a_label, b_label = labels(tidy, args.a)
    table = evidence(tidy, a_label, b_label, args.splits)
    atomic_write_text(out / "evidence.csv", table.to_csv(index=False))
    command = " ".join(["python -m tools.repeat_evidence", *(argv if argv is not None else sys.argv[1:])])
    atomic_write_text(out / "evidence.md", markdown(table, repeat_order(run_infos([args.sweep])), command))
    build_report([args.sweep], out / "report", baseline=a_label, plots=False)
    print((out / "evidence.md").read_text())


if __name__ == "__main__":
    main()
