"""Normalised Wasserstein where the plain computation overflows: samples of huge finite values.

``W1(ref, cur) / std(ref)`` is scale-free, but its parts are not: the reference's sum of squared
deviations (``m2``, numpy's ``std``) overflows to ``inf`` once the values pass ~1e154, and the area's
``x − prev`` once they span more than the float64 range; the score then read 0 (drift as none) or NaN.
Both samples are scaled here by one power of two, chosen so that every value is below 1 in magnitude:
multiplying by a power of two is exact (short of values so small next to the largest that they become
subnormal, whose share of the statistic is below its rounding), so this is the same statistic, with
nothing left to overflow. The scorers use it only for the features whose plain result is not finite, so
every other score is bit-for-bit what it was.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from kernels.drift.ecdf_walk import ks_and_area

FloatArray = npt.NDArray[np.float64]


def normalised_wasserstein_scaled(ref_sorted: FloatArray, cur_sorted: FloatArray) -> float:
    """``W1 / std(ref)`` (population std) of two non-empty ascending samples of finite values, computed
    on both scaled below 1 (see the module doc); a constant reference gives 0 when the current sample
    equals it, else ``+∞``."""
    largest = max(abs(ref_sorted[0]), abs(ref_sorted[-1]), abs(cur_sorted[0]), abs(cur_sorted[-1]))
    if largest == 0.0:
        return 0.0
    _, exponent = math.frexp(largest)  # largest = m · 2**exponent, 0.5 ≤ m < 1
    ref = np.ldexp(ref_sorted, -exponent)
    cur = np.ldexp(cur_sorted, -exponent)
    _, area = ks_and_area(ref, cur)
    std = float(np.std(ref))
    if std > 0.0:
        return area / std
    return 0.0 if area == 0.0 else math.inf
