"""Statistics of timed samples (pure functions): per-cell summaries with a confidence interval of the median, and
the two-sample test that decides whether one configuration is faster than another beyond noise.

- ``summarize``: mean, p10/p50/p90/p99, std, min, max, n, the coefficient of variation (std / mean) and a
  ``CONFIDENCE`` (95 %) percentile-bootstrap interval of the median (``scipy.stats.bootstrap``, ``N_RESAMPLES``
  resamples, seeded with ``SEED`` so the same samples always give the same interval).
- ``compare_samples``: a verdict for two sample sets. The ratio of medians (B / A) with its bootstrap interval,
  and a two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``). B is called ``higher``/``lower`` only when
  the test rejects "same distribution" at ``alpha`` AND the medians differ by at least ``min_effect`` (a
  statistically clear 1 % change is not a verdict a reader should act on); a side with fewer than ``min_n``
  samples or a CV above ``max_cv`` makes the pair ``unstable``: no verdict is given.

The samples passed to ``compare_samples`` should be independent units. Decode steps of one iteration are not
(they share the iteration's machine state and KV length), so callers compare decode by per-iteration medians.
References: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 13 (percentile intervals);
Mann & Whitney (1947).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

STAT_NAMES = ("mean", "p10", "p50", "p90", "p99", "std", "min", "max", "n", "cv", "p50_ci_low", "p50_ci_high")
CONFIDENCE = 0.95  # level of every interval enginebench reports
N_RESAMPLES = 1000  # bootstrap resamples: the interval's end points move by ~1 % of its width between seeds
SEED = 0  # the same samples always give the same interval
_BATCH = 100  # resamples evaluated at once: bounds memory at 100 x n values for cells with many decode steps

# Defaults of the verdict (enginebench-report --alpha/--min-effect/--min-n/--max-cv)
ALPHA = 0.01  # Mann-Whitney two-sided significance level
MIN_EFFECT = 0.05  # smallest relative change of the median that counts as a difference
MIN_N = 5  # fewer samples on either side: unstable (5 vs 5 is the smallest n where p < 0.01 is reachable)
MAX_CV = 0.25  # a side whose std / mean exceeds this was too noisy to judge


def _median(x, axis=-1):
    return np.median(x, axis=axis)


def median_ci(samples, confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median; (nan, nan) below two samples, (v, v) if all are equal."""
    from scipy.stats import bootstrap

    x = np.asarray(samples, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = bootstrap((x,), _median, confidence_level=confidence, n_resamples=N_RESAMPLES, method="percentile",
                    vectorized=True, batch=_BATCH, random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def relative_ci_half_width(samples) -> float:
    """Half the width of the median's interval over the median (0.02 = ±2 %); inf below two samples."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < 2:
        return math.inf
    low, high = median_ci(x)
    median = float(np.median(x))
    return (high - low) / 2 / abs(median) if median else math.inf


def summarize(samples, ci: bool = True) -> dict[str, float]:
    """mean, p10/p50/p90/p99 (linear interpolation), sample std (ddof=1), min, max, n, cv and (with ``ci``)
    the bootstrap interval of the median of a 1-D sample."""
    x = np.asarray(list(samples), dtype=np.float64)
    if x.size == 0:
        return {k: math.nan for k in STAT_NAMES} | {"n": 0}
    p10, p50, p90, p99 = np.percentile(x, [10, 50, 90, 99])
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    low, high = median_ci(x) if ci else (math.nan, math.nan)
    return {
        "mean": mean, "p10": float(p10), "p50": float(p50), "p90": float(p90), "p99": float(p99), "std": std,
        "min": float(x.min()), "max": float(x.max()), "n": int(x.size),
        "cv": std / abs(mean) if mean else math.nan, "p50_ci_low": low, "p50_ci_high": high,
    }


@dataclass
class Verdict:
    """Outcome of comparing sample set B against A (ratio = median(B) / median(A))."""

    verdict: str  # "higher" | "lower" | "within noise" | "unstable"
    ratio: float
    ratio_ci_low: float
    ratio_ci_high: float
    p_value: float
    n_a: int
    n_b: int
    cv_a: float
    cv_b: float
    reason: str = ""  # why a pair is unstable

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _ratio_of_medians(a, b, axis=-1):
    return np.median(b, axis=axis) / np.median(a, axis=axis)


def compare_samples(a, b, alpha: float = ALPHA, min_effect: float = MIN_EFFECT, min_n: int = MIN_N,
                    max_cv: float = MAX_CV, confidence: float = CONFIDENCE, seed: int = SEED) -> Verdict:
    """Is B different from A beyond noise? See the module docstring for the rule."""
    from scipy.stats import bootstrap, mannwhitneyu

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cv_a, cv_b = (float(x.std(ddof=1) / abs(x.mean())) if x.size > 1 and x.mean() else math.nan for x in (a, b))
    ratio = float(np.median(b) / np.median(a)) if a.size and b.size and np.median(a) else math.nan
    unstable = []
    if min(a.size, b.size) < min_n:
        unstable.append(f"n={a.size} vs {b.size} (< {min_n})")
    for side, cv in (("A", cv_a), ("B", cv_b)):
        if not cv <= max_cv:  # also catches nan
            unstable.append(f"CV of {side} {cv:.2f} (> {max_cv})")
    if unstable or not a.size or not b.size:
        return Verdict("unstable", ratio, math.nan, math.nan, math.nan, int(a.size), int(b.size), cv_a, cv_b,
                       "; ".join(unstable))
    if np.all(a == a[0]) and np.all(b == b[0]):
        low = high = ratio
    else:
        res = bootstrap((a, b), _ratio_of_medians, confidence_level=confidence, n_resamples=N_RESAMPLES,
                        method="percentile", vectorized=True, paired=False, batch=_BATCH,
                        random_state=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    if p < alpha and abs(ratio - 1.0) >= min_effect:
        verdict = "higher" if ratio > 1 else "lower"
    else:
        verdict = "within noise"
    return Verdict(verdict, ratio, low, high, p, int(a.size), int(b.size), cv_a, cv_b)
