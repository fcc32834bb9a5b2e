"""The drift reference profile of a training set, as a file: what drift monitoring compares live
traffic with, built by :func:`kernels.drift.build_reference_profile` over the training features.

Format: an ``.npz`` (numpy's zip of arrays, loaded with ``allow_pickle=False``) holding every field of
:class:`~kernels.drift.ReferenceProfile` plus ``feature_names`` (the pinned feature references, in the
order of the profile's rows and of the model's input) and ``format``.

How it is linked to a model version: the file is uploaded to the artifact store and logged as the run
artifact :data:`RUN_ARTIFACT_NAME` of the version's run (``ListArtifacts(run_id)`` gives its sha256), the
run carries the tag :data:`SHA_TAG`, and the version's description names the sha256 too.

Files written before point masses had bins of their own (``edges`` padded to ``n_bins − 1``, see
:mod:`kernels.drift.binning`) still load. One whose sorted sample is complete — every profile the
built-in trainer wrote, and any of at most 100,000 rows per feature — is re-binned on load, exactly as
if built today (:func:`kernels.drift.profile.with_point_mass_bins`), so its PSI and JSD now see a move up
off a point mass. A compacted one keeps its old bins and scores as before; loading it logs a warning:
register the reference profile again from the training data to give it the new bins. Likewise a file
written before a feature of few distinct values (a flag, a categorical code) was binned by value is
re-binned on load when its sample is complete and its edges are the quantile rule's; a compacted one, or
one whose edges were imposed, keeps its bins (quietly: they score as they did).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from kernels.drift import ReferenceProfile, build_reference_profile
from kernels.drift.profile import with_point_mass_bins

_log = logging.getLogger("aether.control_plane.training")

FORMAT = 1
RUN_ARTIFACT_NAME = "drift_reference_profile.npz"
SHA_TAG = "aether.reference_profile_sha256"
_ARRAYS = ("edges", "bin_counts", "sorted_values", "n_valid", "n_missing", "mean", "m2")


def build_profile(features: npt.ArrayLike) -> ReferenceProfile:
    """Profile of the training features ``[rows, features]`` (NaN = missing, counted as such)."""
    return build_reference_profile(np.asarray(features, dtype=np.float64))


def profile_to_bytes(profile: ReferenceProfile, feature_names: Sequence[str]) -> bytes:
    if len(feature_names) != profile.n_features:
        raise ValueError(f"{len(feature_names)} names for a profile of {profile.n_features} features")
    buffer = io.BytesIO()
    arrays = {name: getattr(profile, name) for name in _ARRAYS}
    np.savez(
        buffer,
        format=np.array(FORMAT),
        n_bins=np.array(profile.n_bins),
        feature_names=np.array(list(feature_names), dtype=np.str_),
        **arrays,
    )
    return buffer.getvalue()


def profile_from_bytes(data: bytes) -> tuple[ReferenceProfile, tuple[str, ...]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        if int(archive["format"]) != FORMAT:
            raise ValueError(f"unknown reference profile format {int(archive['format'])}")
        names = tuple(str(name) for name in archive["feature_names"])
        profile = ReferenceProfile(n_bins=int(archive["n_bins"]), **{name: archive[name] for name in _ARRAYS})
    rebinned = with_point_mass_bins(profile)
    if rebinned is None:
        _log.warning(
            "reference profile of %s uses the old bins, blind to a move up off a point mass (a flag, a "
            "constant, a capped value) for PSI and JSD; register it again from the training data",
            ", ".join(names[:3]) + (", ..." if len(names) > 3 else ""),
        )
        return profile, names
    return rebinned, names
