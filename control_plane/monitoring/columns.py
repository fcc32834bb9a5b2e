"""Which logged column each reference-profile feature is compared with: paired by name. Pure.

The logged window's columns are the model version's ``feature_refs`` (``view@2:feature``), in model-input
order: the data plane assembles a Predict request's input in that order and logs it as it is
(``control_plane/deployments/plans.py`` hands the data plane the version's refs), and the entries
themselves carry no names. The profile's feature names are those it was built with: the training
table's column names (the built-in trainer's pinned references), the names given, or ``f0, f1, ...``
when none were given (:func:`.profiles.as_feature_matrix`).

A profile feature pairs with the logged column

1. named exactly like it;
2. else, for a name that is a feature reference in a looser spelling, the one logged column it names:
   ``view:feature`` (a training set queried without pinning names its columns so) the column of that
   view and feature, and a bare ``feature`` the column of that feature, when one view alone has it.

Each logged column pairs with one feature at most (exact names first). A feature or column left unpaired
is *not compared*, with the reason (:attr:`Pairing.unpaired_features`, :attr:`Pairing.unpaired_columns`):
never paired with another column by its position. Compared by position, a profile whose columns came in
another order than the model's input (a reordered new version, a dataset of another column order)
scored each feature against another one's values, and unchanged traffic read as drift, or drift as none.

Only where there are no names to go by are columns paired by position, as they always were: a version
that lists no ``feature_refs`` (its logged columns have no names), or a profile built without names
(exactly ``f0 .. f{n-1}``, none of them naming a logged column); then the widths must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clients.errors import InvalidArgument
from clients.feature_refs import parse_ref


@dataclass(frozen=True)
class Pairing:
    """``columns[i]``: the logged column profile feature ``i`` is compared with (None: not compared)."""

    columns: tuple[int | None, ...]
    by_position: bool
    #: Profile feature index → why it is not compared.
    unpaired_features: dict[int, str]
    #: Logged column index → why it is not compared (no profile feature pairs with it).
    unpaired_columns: dict[int, str]

    @property
    def compared(self) -> int:
        return sum(column is not None for column in self.columns)


NOT_PROFILED = "the reference profile has no feature of this name"


def default_names(width: int) -> tuple[str, ...]:
    """The names a profile built without names has: ``f0 .. f{width-1}``."""
    return tuple(f"f{i}" for i in range(width))


def pair_columns(profile_names: Sequence[str], logged_names: Sequence[str], width: int) -> Pairing | None:
    """How ``profile_names`` pair with the ``width`` logged columns named ``logged_names`` (empty: they
    have no names). None when there are no names to go by and the widths differ: nothing pairs."""
    n = len(profile_names)
    if not logged_names or len(logged_names) != width:
        # No names on the logged side (or names for another width, which do not describe these rows).
        return _by_position(n, width) if not logged_names else None
    pairing = _by_name(profile_names, logged_names)
    if pairing.compared == 0 and tuple(profile_names) == default_names(n):
        return _by_position(n, width)  # a profile built without names: position is all there is
    return pairing


def _by_position(n: int, width: int) -> Pairing | None:
    if n != width:
        return None
    return Pairing(tuple(range(n)), True, {}, {})


def _by_name(profile_names: Sequence[str], logged_names: Sequence[str]) -> Pairing:
    columns: list[int | None] = [None] * len(profile_names)
    claimed: dict[int, int] = {}  # logged column → the profile feature compared with it
    exact: dict[str, int] = {}
    for j, name in enumerate(logged_names):
        exact.setdefault(name, j)
    for i, name in enumerate(profile_names):
        found = exact.get(name)
        if found is not None and found not in claimed:
            columns[i], claimed[found] = found, i
    unpaired: dict[int, str] = {}
    parsed = [_view_and_feature(name) for name in logged_names]
    for i, name in enumerate(profile_names):
        if columns[i] is not None:
            continue
        candidates = _loose_candidates(name, parsed)
        if name in exact:  # the same name twice in the profile: the first took the column
            candidates = [exact[name]]
        if not candidates:
            unpaired[i] = "no logged column of this name: the model version's feature_refs do not name it"
        elif len(candidates) > 1:
            named = ", ".join(logged_names[j] for j in candidates)
            unpaired[i] = (
                f"names several logged columns ({named}): name the profile's features view@N:feature"
            )
        elif candidates[0] in claimed:
            other = profile_names[claimed[candidates[0]]]
            unpaired[i] = (
                f"its logged column {logged_names[candidates[0]]} is compared with the feature {other}"
            )
        else:
            columns[i], claimed[candidates[0]] = candidates[0], i
    return Pairing(
        tuple(columns),
        False,
        unpaired,
        {j: NOT_PROFILED for j in range(len(logged_names)) if j not in claimed},
    )


def _loose_candidates(name: str, logged: Sequence[tuple[str, str] | None]) -> list[int]:
    """The logged columns a profile name in a looser spelling names: ``view:feature`` those of that view
    and feature (any version), a bare ``feature`` those of that feature (any view)."""
    try:
        ref = parse_ref(name)
    except InvalidArgument:
        return []
    if ref.version is not None:
        return []  # a pinned reference pairs exactly or not at all: another version is other data
    if ref.feature is not None:
        return [j for j, found in enumerate(logged) if found == (ref.view, ref.feature)]
    return [j for j, found in enumerate(logged) if found is not None and found[1] == ref.view]


def _view_and_feature(name: str) -> tuple[str, str] | None:
    try:
        ref = parse_ref(name)
    except InvalidArgument:
        return None
    return None if ref.feature is None else (ref.view, ref.feature)
