"""Scoring one window against its reference: per-feature results and the dataset-level verdict. Pure.

Per feature the configured test decides (scores from :func:`kernels.drift.drift_scores`):

* PSI: drifted when ``psi ≥ threshold``; JSD: ``jensen_shannon ≥ threshold``; Wasserstein:
  ``wasserstein ≥ threshold`` (normalised by the reference std);
* KS: drifted when the KS p-value, corrected over the window's scored features (Benjamini–Hochberg by
  default, or Bonferroni, or none), is below ``threshold``.

**Columns** are paired by name (:mod:`.columns`): profile feature ``i`` is compared with the logged column
of its name, the model version's ``feature_refs`` naming the logged columns. A feature or column left
unpaired is listed *not compared* (``FeatureDrift.not_compared`` says why: no score, never drifted, not in
the share); a window where nothing pairs is ``SCHEMA_MISMATCH``, every feature and column listed so.

A feature with fewer than ``min_samples`` finite values (in the window or the reference) is
*insufficient*: no score, never drifted, and not counted in the share. The window drifts when
``drifted / scored ≥ drift_share``; with no scored feature it is ``INSUFFICIENT_DATA`` — never a drift.
NaN and ±∞ values are counted per feature (``missing_current``) and left out of every score.

**Precision.** The reference and the window are compared in the precision the model is served with:
both are rounded to it (:func:`kernels.drift.at_precision`, :func:`kernels.drift.round_to`) before any
bin is counted. A float64 reference holds 0.1 on a point-mass bin ``[0.1, nextafter(0.1))`` that the
float32 value a float32 model is fed (``float32(0.1) > 0.1``) misses, and so an unchanged feature read
as wholly drifted (PSI ≈ 17, JSD 1, KS p ≈ 0). The precision is the model version's input (or output)
dtype from its signature when the caller knows it (:class:`.profiles.ReferenceCache`); else the window's
own: float32 when every finite value of it is a float32 (what the data plane logs for a float32 model),
which leaves a float64 window and its reference as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.monitoring.columns import Pairing, pair_columns
from kernels.drift import (
    Correction,
    ReferenceProfile,
    adjust_pvalues,
    at_precision,
    drift_scores,
    round_to,
    select_features,
)

_CORRECTIONS: dict[pb.MultipleTestingCorrection, Correction] = {
    pb.MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG: "benjamini-hochberg",
    pb.MULTIPLE_TESTING_CORRECTION_BONFERRONI: "bonferroni",
    pb.MULTIPLE_TESTING_CORRECTION_NONE: "none",
}


@dataclass(frozen=True)
class DriftRule:
    test: pb.DriftTest
    threshold: float
    correction: pb.MultipleTestingCorrection
    drift_share: float
    min_samples: int

    @classmethod
    def of(cls, config: pb.MonitorConfig) -> DriftRule:
        """The rule of an *effective* config (see :func:`control_plane.monitoring.config.effective`)."""
        return cls(config.test, config.threshold, config.correction, config.drift_share, config.min_samples)


@dataclass(frozen=True)
class Verdict:
    status: pb.DriftStatus
    drifted_share: float
    features: list[pb.FeatureDrift]


def evaluate(
    profile: ReferenceProfile,
    names: tuple[str, ...],
    window: npt.NDArray[np.float64],
    rule: DriftRule,
    precision: npt.DTypeLike | None = None,
    logged_names: Sequence[str] = (),
) -> Verdict:
    """The verdict on ``window`` (``[rows, features]``, its columns named ``logged_names``: the model
    version's ``feature_refs``; empty when it lists none) against ``profile`` (its features named
    ``names``), both rounded to ``precision`` (the served dtype; None: the window's own, see the module
    doc)."""
    pairing = pair_columns(names, logged_names, window.shape[1]) if window.ndim == 2 else None
    if pairing is None:
        return Verdict(pb.DRIFT_STATUS_SCHEMA_MISMATCH, 0.0, [])
    compared = [i for i, column in enumerate(pairing.columns) if column is not None]
    columns = [column for column in pairing.columns if column is not None]
    if not compared:
        return Verdict(pb.DRIFT_STATUS_SCHEMA_MISMATCH, 0.0, _not_compared(pairing, names, logged_names))
    window = window[:, columns]
    if compared != list(range(profile.n_features)):
        profile = select_features(profile, compared)
    served = np.dtype(precision) if precision is not None else window_precision(window)
    if served.kind == "f" and served.itemsize < 8:
        window = round_to(window, served)
        profile = at_precision(profile, served)
    scores = drift_scores(profile, window, min_samples=rule.min_samples)
    insufficient = scores.insufficient
    adjusted = adjust_pvalues(np.where(insufficient, np.nan, scores.ks_pvalue), _CORRECTIONS[rule.correction])
    statistic = _statistic(rule.test, scores.psi, scores.jensen_shannon, adjusted, scores.wasserstein)
    with np.errstate(invalid="ignore"):  # NaN (insufficient) compares false either way
        drifted = statistic < rule.threshold if rule.test == pb.DRIFT_TEST_KS else statistic >= rule.threshold
    drifted = drifted & ~insufficient
    n_scored = int(np.count_nonzero(~insufficient))
    scored = {
        i: pb.FeatureDrift(
            name=names[i] if i < len(names) else f"f{i}",
            score=float(statistic[k]),
            drifted=bool(drifted[k]),
            insufficient=bool(insufficient[k]),
            psi=float(scores.psi[k]),
            jensen_shannon=float(scores.jensen_shannon[k]),
            ks_statistic=float(scores.ks_statistic[k]),
            ks_pvalue=float(scores.ks_pvalue[k]),
            ks_pvalue_adjusted=float(adjusted[k]),
            wasserstein=float(scores.wasserstein[k]),
            n_current=int(scores.n_current[k]),
            missing_current=int(scores.missing_current[k]),
            logged_column="" if pairing.by_position else logged_names[columns[k]],
            paired_by_position=pairing.by_position,
        )
        for k, i in enumerate(compared)
    }
    unpaired = iter(_not_compared(pairing, names, logged_names))
    features = [scored[i] if i in scored else next(unpaired) for i in range(len(pairing.columns))]
    features.extend(unpaired)  # the logged columns no feature pairs with, after the profile's
    if n_scored == 0:
        return Verdict(pb.DRIFT_STATUS_INSUFFICIENT_DATA, 0.0, features)
    share = int(np.count_nonzero(drifted)) / n_scored
    status = pb.DRIFT_STATUS_DRIFT if share >= rule.drift_share and share > 0 else pb.DRIFT_STATUS_NO_DRIFT
    return Verdict(status, share, features)


def _not_compared(
    pairing: Pairing, names: Sequence[str], logged_names: Sequence[str]
) -> list[pb.FeatureDrift]:
    """The unpaired profile features, in profile order, then the unpaired logged columns, in their order:
    each with why it was not compared, and no score."""
    return [_unscored(names[i], reason) for i, reason in sorted(pairing.unpaired_features.items())] + [
        _unscored(logged_names[j], reason) for j, reason in sorted(pairing.unpaired_columns.items())
    ]


def _unscored(name: str, reason: str) -> pb.FeatureDrift:
    nan = float("nan")
    return pb.FeatureDrift(
        name=name,
        not_compared=reason,
        score=nan,
        psi=nan,
        jensen_shannon=nan,
        ks_statistic=nan,
        ks_pvalue=nan,
        ks_pvalue_adjusted=nan,
        wasserstein=nan,
    )


def window_precision(window: npt.NDArray[np.float64]) -> np.dtype[np.floating]:
    """float32 when every finite value of ``window`` is one (it was logged as float32), else float64."""
    finite = window[np.isfinite(window)]
    if finite.size and np.array_equal(round_to(finite, np.float32), finite):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _statistic(
    test: pb.DriftTest,
    psi: npt.NDArray[np.float64],
    jsd: npt.NDArray[np.float64],
    ks_adjusted: npt.NDArray[np.float64],
    wasserstein: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    by_test = {
        pb.DRIFT_TEST_PSI: psi,
        pb.DRIFT_TEST_JSD: jsd,
        pb.DRIFT_TEST_KS: ks_adjusted,
        pb.DRIFT_TEST_WASSERSTEIN: wasserstein,
    }
    return by_test[test]
