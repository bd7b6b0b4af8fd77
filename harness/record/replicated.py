"""Verdicts that survive a rerun: statistics over repeated runs of one configuration (``measure.repeats``).

Two runs of one configuration differ by more than their iterations say: each load of the engine lands a little
faster or slower (kernel choice, memory placement, clocks), by 1-4 % on the GPUs measured. A test that treats every
iteration of two runs as independent draws calls that run-to-run drift a regression. Here the unit of replication
is the run:

- ``central_value``: the point estimate of a side, the geometric mean over runs of each run's median unit (an
  iteration; decode: its median step). One run: its median, as before. The same estimator gives the interval and
  the verdict. (The median of all units pooled was the first choice; with a drift of 4 % between runs it missed the
  80 % detection target of the evidence test that this one meets: a median over a mixture of runs wastes the
  run-level information a mean keeps.)
- ``two_level_log_estimates``: the bootstrap distribution of log(central value) when both levels are resampled: runs
  with replacement, then iterations with replacement within each chosen run (Davison & Hinkley, *Bootstrap Methods
  and their Application* (1997), sec. 3.8, "multi-sample and hierarchical data": resample at the top level, and
  with replacement at the lower one).
- ``between_runs_interval`` / ``compare_runs_samples``: the interval of a median (of a ratio of medians) is
  ``log estimate ± t(1 - (1-level)/2, df) × SE``, SE the two-level bootstrap's standard deviation scaled by
  R/(R-1) per side, df the Welch-Satterthwaite degrees of freedom over the runs. Why not the bootstrap's percentile
  interval: with R runs the resampled spread of run-level values is only (R-1)/R of theirs, and 3 runs admit 10
  distinct resamples, so a 95 % percentile interval over 3 runs covers about 80 % (the A/A tests in
  tests/test_replicated.py measure this); the t quantile over R-1 degrees of freedom and the R/(R-1) factor are the
  textbook small-sample corrections (Efron & Tibshirani (1993), ch. 12, "the bootstrap-t and its simplest form,
  estimate ± t × bootstrap SE").

The verdict between runs: B is ``higher``/``lower`` only when the (1 - alpha) interval (alpha: by default
``ALPHA_BETWEEN_RUNS``) of the ratio excludes 1 AND
the ratio differs from 1 by at least ``min_effect``; ``unstable`` below ``min_n`` units or above ``max_cv`` (the
CV of a side's pooled units) as within a run (harness/measure/stats.py). ``resolves``: the smallest relative change the
pair could have called, max(min_effect, the interval's relative half-width).

Written with NumPy rather than ``scipy.stats.bootstrap``: scipy resamples one level (observations along an axis);
it has no clustered or two-level resampling. The loop below is vectorised over resamples (in batches, so memory
stays at ``_BATCH`` x runs x iterations values).
"""
from __future__ import annotations

import math

import numpy as np

from harness.measure.stats import CONFIDENCE, MAX_CV, MIN_EFFECT, MIN_N, SEED, Verdict, unstable_reasons

_BATCH = 400  # resamples drawn at once (all of N_SE_RESAMPLES in one pass for cells of up to ~1000 iterations)
# Default significance level between runs: the verdict interval is a 96 % one. Chosen so that both evidence tests in
# tests/test_replicated.py hold with runs that drift by 4 % (standard deviation): A/A with 3 runs a side gets a
# verdict in <= 2 % of seeds, a true 10 % change with 5 runs a side is found in >= 80 %. At 0.01 (the within-run
# level) the same change is missed too often; a Welch t-test on the run medians, about the best a test can do with
# 5 runs, needs about the same level to meet both.
ALPHA_BETWEEN_RUNS = 0.04
# A bootstrap standard error settles with a few hundred resamples (Efron & Tibshirani (1993), sec. 6.4: 25-200 are
# usually enough); 400 keeps the verdict's interval within ~3 % of its limit and a compare fast.
N_SE_RESAMPLES = 400


def _as_runs(runs) -> list[np.ndarray]:
    return [np.asarray(r, dtype=np.float64).ravel() for r in runs if np.asarray(r).size]


def central_value(runs) -> float:
    """The point estimate of a side: the geometric mean over runs of each run's median unit (one run: its median)."""
    runs = _as_runs(runs)
    return float(np.exp(np.mean([np.log(np.median(r)) for r in runs]))) if runs else math.nan


def two_level_log_estimates(runs, n_resamples: int = N_SE_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """log(:func:`central_value`) of ``n_resamples`` two-level resamples of ``runs`` (a list of 1-D arrays, one per
    run, of possibly different lengths)."""
    runs = _as_runs(runs)
    rng = np.random.default_rng(seed)
    lengths = np.array([r.size for r in runs])
    padded = np.full((len(runs), lengths.max()), np.nan)
    for i, r in enumerate(runs):
        padded[i, :r.size] = r
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, _BATCH):
        b = min(_BATCH, n_resamples - start)
        pick = rng.integers(0, len(runs), (b, len(runs)))  # [b, R]: runs drawn with replacement
        n = lengths[pick]  # [b, R]: each drawn run keeps its own iteration count
        within = (rng.random((b, len(runs), padded.shape[1])) * n[..., None]).astype(np.int64)  # [b, R, max n]
        values = padded[pick[..., None], within]
        values[np.arange(padded.shape[1]) >= n[..., None]] = np.nan  # slots beyond a run's length
        values = np.sort(values, axis=2)  # NaN sorts last: a run's n values come first
        lo = np.take_along_axis(values, ((n - 1) // 2)[..., None], axis=2)[..., 0]
        hi = np.take_along_axis(values, (n // 2)[..., None], axis=2)[..., 0]
        out[start:start + b] = np.log((lo + hi) / 2).mean(axis=1)  # [b]: log of the geometric mean of medians
    return out


def _side_variance(runs, seed: int) -> float:
    """Variance of log(pooled median) between reruns: the two-level bootstrap's, scaled by R / (R - 1)."""
    r = len(_as_runs(runs))
    return float(np.var(two_level_log_estimates(runs, seed=seed), ddof=1)) * r / (r - 1)


def _t_quantile(level: float, df: float) -> float:
    from scipy.special import stdtrit  # the t distribution's quantile as a plain ufunc: scipy.stats.t's checks
    # cost more than the whole bootstrap of a small cell

    return float(stdtrit(df, 1 - (1 - level) / 2)) if df > 0 else math.inf


def between_runs_interval(runs, confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float]:
    """Interval of the pooled median that includes the run-to-run spread; (nan, nan) below two runs."""
    runs = _as_runs(runs)
    if len(runs) < 2:
        return math.nan, math.nan
    median = central_value(runs)
    se = math.sqrt(_side_variance(runs, seed))
    half = _t_quantile(confidence, len(runs) - 1) * se
    return median * math.exp(-half), median * math.exp(half)


def _cv(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / abs(x.mean())) if x.size > 1 and x.mean() else math.nan


def compare_runs_samples(runs_a, runs_b, alpha: float | None = None, min_effect: float = MIN_EFFECT, min_n: int = MIN_N,
                         max_cv: float = MAX_CV, seed: int = SEED) -> Verdict:
    """Is B different from A beyond the noise of a rerun? ``runs_a``/``runs_b``: one array of independent units per
    run, at least two runs a side (see the module docstring for the rule)."""
    from scipy.special import stdtr

    alpha = ALPHA_BETWEEN_RUNS if alpha is None else alpha
    runs_a, runs_b = _as_runs(runs_a), _as_runs(runs_b)
    if min(len(runs_a), len(runs_b)) < 2:
        raise ValueError("a between-runs verdict needs at least two runs a side")
    a, b = np.concatenate(runs_a), np.concatenate(runs_b)
    cv_a, cv_b = _cv(a), _cv(b)
    ratio = central_value(runs_b) / central_value(runs_a)
    counts = dict(n_a=int(a.size), n_b=int(b.size), cv_a=cv_a, cv_b=cv_b, scope="between runs",
                  runs_a=len(runs_a), runs_b=len(runs_b))
    unstable = unstable_reasons(a.size, b.size, cv_a, cv_b, min_n, max_cv)
    if unstable:
        return Verdict("unstable", ratio, math.nan, math.nan, math.nan, reason="; ".join(unstable), **counts)
    var_a, var_b = _side_variance(runs_a, seed), _side_variance(runs_b, seed + 1)
    se = math.sqrt(var_a + var_b)
    if se == 0:  # every unit of both sides identical: the ratio is exact
        p, low, high = (1.0 if ratio == 1 else 0.0), ratio, ratio
    else:
        df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(runs_a) - 1) + var_b ** 2 / (len(runs_b) - 1))
        half = _t_quantile(1 - alpha, df) * se
        low, high = ratio * math.exp(-half), ratio * math.exp(half)
        p = float(2 * stdtr(df, -abs(math.log(ratio)) / se))
    excludes_one = low > 1 or high < 1
    if excludes_one and abs(ratio - 1.0) >= min_effect:
        verdict = "higher" if ratio > 1 else "lower"
    else:
        verdict = "within noise"
    resolves = max(min_effect, (high - low) / 2 / ratio)
    return Verdict(verdict, ratio, low, high, p, resolves=resolves, **counts)
