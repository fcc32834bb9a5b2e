"""The catalog's cache of compiled read plans, bounded by what the plans hold as well as by their number.

Why not ``functools.lru_cache`` (what the catalog used): it bounds the number of plans only, and a plan's
size follows its request. A plan of 5,000 references held ~1.5 MB (its key, the wire prefix and frames of
its columns), so 1,024 distinct long reference lists, each within the request limits, grew a data plane
by gigabytes. Each plan here weighs its references plus its columns (:func:`plan_weight`, about 150-300
bytes a unit), and the least recently used plans go once the total passes ``max_weight``.

One cache serves both keys a plan is found by: the tuple of references (:meth:`Catalog.plan`) and the
serialized references of a request (:meth:`Catalog.plan_for_wire`, which stores its plan under both);
the two kinds never compare equal, and each entry is weighed in full.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable

from data_plane.plan import ReadPlan

#: The default bound on the references and columns of the cached plans together: some 30-60 MB. A client
#: that repeats its references (as clients do) hits whatever their number; distinct lists of 10,000 features
#: are kept ten at a time.
MAX_WEIGHT = 200_000


def plan_weight(reference_count: int, plan: ReadPlan) -> int:
    """What a cached plan holds, in references and columns (what its key and its blocks grow with)."""
    return reference_count + plan.feature_count


class PlanCache:
    """Least recently used plans, at most ``max_plans`` of them weighing at most ``max_weight`` together
    (a plan heavier than that on its own is compiled for each request that asks for it). Single-threaded:
    the event loop's."""

    def __init__(self, max_plans: int, max_weight: int = MAX_WEIGHT) -> None:
        if max_plans < 1 or max_weight < 1:
            raise ValueError(
                f"a plan cache needs max_plans and max_weight ≥ 1, got {max_plans}, {max_weight}"
            )
        self.max_plans = max_plans
        self.max_weight = max_weight
        self._plans: collections.OrderedDict[Hashable, tuple[ReadPlan, int]] = collections.OrderedDict()
        self.weight = 0

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: Hashable) -> ReadPlan | None:
        entry = self._plans.get(key)
        if entry is None:
            return None
        self._plans.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, plan: ReadPlan, weight: int) -> None:
        if key in self._plans:
            self.weight -= self._plans.pop(key)[1]
        if weight > self.max_weight:
            return
        self._plans[key] = (plan, weight)
        self.weight += weight
        while self.weight > self.max_weight or len(self._plans) > self.max_plans:
            self.weight -= self._plans.popitem(last=False)[1][1]
