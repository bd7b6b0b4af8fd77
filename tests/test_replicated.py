"""Verdicts between runs (harness/record/replicated.py) and the exact rank test (harness/measure/stats.py), on synthetic
samples that carry run-level drift: each run's level is drawn once (the load), its iterations around it.

The evidence tests count false and true verdicts of the real rule over 500 seeds (a few seconds: the rule's
bootstrap is vectorised)."""
import numpy as np
import pytest

from harness.measure.stats import compare_samples, rank_test_p, summarize_steps
from harness.record.replicated import between_runs_interval, central_value, compare_runs_samples
from harness.report.repeats import judge

DRIFT = 0.04  # standard deviation of a run's level (log scale): the run-to-run spread of the GPUs
WITHIN = 0.02  # spread of iterations within a run
ITERATIONS = 10


def runs(rng, count, level=1.0, drift=DRIFT):
    """``count`` runs of ITERATIONS iterations; each run's level drifts by ``drift`` around ``level``."""
    return [level * 10.0 * np.exp(rng.normal(0, drift)) * np.exp(rng.normal(0, WITHIN, ITERATIONS))
            for _ in range(count)]


def test_aa_with_run_drift_gets_at_most_2_percent_false_verdicts():
    false = sum(compare_runs_samples(runs(rng, 3), runs(rng, 3)).verdict != "within noise"
                for rng in map(np.random.default_rng, range(500)))
    assert false / 500 <= 0.02


def test_within_run_rule_on_the_same_runs_calls_drift_a_difference():
    """What the within-run rule does with those runs when it pools them as independent draws (the old verdict)."""
    false = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        false += compare_samples(np.concatenate(runs(rng, 3)), np.concatenate(runs(rng, 3))).verdict != "within noise"
    assert false / 40 >= 0.075  # well above the 2 % the between-runs rule keeps to on the same kind of runs


def test_ab_true_10_percent_shift_is_detected_in_80_percent():
    found = sum(compare_runs_samples(runs(rng, 5), runs(rng, 5, level=1.1)).verdict == "higher"
                for rng in map(np.random.default_rng, range(500)))
    assert found / 500 >= 0.80


def test_between_runs_interval_covers_the_true_level_across_reruns():
    """95 % interval of a median over 3 runs: covers the configuration's true level (10.0) in ~95 % of reruns."""
    covered = 0
    for seed in range(300):
        low, high = between_runs_interval(runs(np.random.default_rng(seed), 3))
        covered += low <= 10.0 <= high
    assert 0.90 <= covered / 300 <= 0.995


def test_central_value_is_one_estimator_for_point_and_interval():
    r = runs(np.random.default_rng(1), 4)
    assert central_value(r) == pytest.approx(np.exp(np.mean([np.log(np.median(x)) for x in r])))
    low, high = between_runs_interval(r)
    assert low < central_value(r) < high
    assert central_value([r[0]]) == pytest.approx(np.median(r[0]))  # one run: its median
    assert np.isnan(between_runs_interval([r[0]])).all()  # no interval between runs from one run


def test_fifty_percent_slower_is_a_verdict_between_runs_with_its_interval():
    rng = np.random.default_rng(7)
    v = compare_runs_samples(runs(rng, 3), runs(rng, 3, level=1.5))
    assert v.verdict == "higher" and v.scope == "between runs" and (v.runs_a, v.runs_b) == (3, 3)
    assert 1 < v.ratio_ci_low < v.ratio < v.ratio_ci_high
    assert v.p_value < 0.04 and v.resolves >= 0.05


def test_resolution_grows_with_the_noise():
    quiet = compare_runs_samples(runs(np.random.default_rng(2), 5, drift=0.005),
                                 runs(np.random.default_rng(3), 5, drift=0.005))
    loud = compare_runs_samples(runs(np.random.default_rng(2), 5, drift=0.08),
                                runs(np.random.default_rng(3), 5, drift=0.08))
    assert quiet.resolves == pytest.approx(0.05)  # the minimum effect: the noise resolves less
    assert loud.resolves > 0.05


def test_one_run_a_side_is_judged_within_the_run():
    rng = np.random.default_rng(4)
    a, b = runs(rng, 1), runs(rng, 1, level=1.5)
    v = judge(a, b)
    assert v.scope == "within run" and v.verdict == "higher"
    assert judge(runs(rng, 3), runs(rng, 3, level=1.5)).scope == "between runs"


def test_noisy_runs_are_unstable_between_runs():
    rng = np.random.default_rng(5)
    noisy = [rng.lognormal(0, 1.0, ITERATIONS) for _ in range(3)]
    v = compare_runs_samples(noisy, runs(rng, 3))
    assert v.verdict == "unstable" and "CV of A" in v.reason


def test_separated_5_vs_5_with_a_tie_gets_a_verdict():
    a = [1.00, 1.00, 1.01, 1.02, 1.03]  # a tie inside A
    b = [1.20, 1.21, 1.21, 1.22, 1.23]  # and inside B
    assert rank_test_p(a, b) == pytest.approx(2 / 252)  # exact: the most extreme 2 of 252 arrangements
    v = compare_samples(a, b)
    assert v.verdict == "higher" and v.p_value < 0.01
    from scipy.stats import mannwhitneyu

    assert mannwhitneyu(a, b).pvalue > 0.01  # what the normal approximation gave: no verdict possible


def test_decode_statistics_are_over_iterations_and_steps_are_kept_apart():
    steps = [[1.0, 1.0, 5.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]]
    s = summarize_steps(steps)
    assert s["n"] == 3 and s["p50"] == 2.0  # medians 1, 2, 3
    assert s["step_p90"] == pytest.approx(np.percentile(np.concatenate(steps), 90))
