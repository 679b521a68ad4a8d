"""Statistics over paired seeds: means with t confidence intervals and paired t-tests (scipy)."""

import warnings

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def mean_ci(values) -> dict[str, float]:
    """Mean, sample standard deviation and the ``CONFIDENCE`` t interval of the mean.

    One value has std 0 and no interval (NaN ends); a NaN value (a diverged run) makes the
    mean and the interval NaN.
    """
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "std": 0.0, "ci_low": np.nan, "ci_high": np.nan}
    if np.isfinite(values).all() and np.ptp(values) == 0.0:  # equal values: a point
        return {"mean": mean, "std": 0.0, "ci_low": mean, "ci_high": mean}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN values give a NaN interval
        low, high = stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
    std = float(values.std(ddof=1))
    return {"mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high)}


def paired_difference(values, reference) -> dict[str, float]:
    """``values - reference`` over paired seeds: mean difference, its ``CONFIDENCE`` t
    interval and the two-sided p-value of the paired t-test (``scipy.stats.ttest_rel``).

    Fewer than two pairs, or pairs that all differ by the same amount, have no interval
    or p-value (NaN).
    """
    values = np.asarray(values, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if values.shape != reference.shape:
        raise ValueError(
            f"paired values need equal lengths, got {values.shape} and {reference.shape}"
        )
    diff = values - reference
    result = {"diff": float(diff.mean()), "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    if len(diff) < 2 or not np.isfinite(diff).all() or np.ptp(diff) == 0.0:
        return result
    test = stats.ttest_rel(values, reference)
    low, high = test.confidence_interval(CONFIDENCE)
    result.update(ci_low=float(low), ci_high=float(high), p=float(test.pvalue))
    return result
