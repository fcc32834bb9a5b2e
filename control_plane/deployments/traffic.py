"""Traffic splits as plain values, and the pure operations on them (validate, set one share, add, remove,
promote). Live variants (primary and canaries) share 100 % of traffic; a shadow's percentage is the
share of requests mirrored to it and counts towards nothing else.

Changing one live variant's share rescales the other live variants by one common factor, so they keep
their proportions among themselves; with the router's weighted rendezvous hashing
(:mod:`kernels.hashing`) that means raising a variant's share only moves users into it, and lowering it
only moves users out of it."""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from clients.serving_rules import MIN_TRAFFIC_PERCENT, share_problem

#: How far the live shares may sum from 100 before a request is refused (they are then rescaled exactly).
SUM_TOLERANCE = 0.01
#: A share rescaled from others may land a rounding error under :data:`MIN_TRAFFIC_PERCENT` (shares summing
#: to 99.99999999 scale by 1.0000000001); only a share further below it was really made smaller.
_RESCALE_SLACK = 1e-9
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class Role(enum.Enum):
    PRIMARY = "primary"
    CANARY = "canary"
    SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class VariantRecord:
    name: str
    model_name: str
    version: int
    role: Role
    traffic_percent: float

    @property
    def live(self) -> bool:
        return self.role is not Role.SHADOW


def default_variant_name(model_name: str, version: int) -> str:
    return f"{model_name}-v{version}"


def check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{what} {name!r} is not valid: 1-128 letters, digits, '_', '.', '-',"
            " starting with a letter or digit"
        )
    return name


def check_model_name(name: str) -> str:
    """A variant's model name, checked before anything is derived from it: the default variant name
    ``<model>-v<version>`` built from an empty one was refused as "variant name '-v1'", a name the caller
    never gave."""
    if not name:
        raise InvalidArgument("model_name is required: the registered model the variant serves")
    return check_name(name, "model name")


def check_percent(percent: float, what: str) -> float:
    if not (math.isfinite(percent) and 0.0 <= percent <= 100.0):
        raise InvalidArgument(f"{what} must be a percentage within [0, 100], not {percent}")
    return float(percent)


def check_share(percent: float, what: str) -> float:
    """A share as :func:`check_percent`, and 0 or at least :data:`MIN_TRAFFIC_PERCENT`: the router gives
    whole buckets, and a share under one got none (see :func:`clients.serving_rules.share_problem`)."""
    check_percent(percent, what)
    problem = share_problem(percent)
    if problem is not None:
        raise InvalidArgument(f"{what} is {percent:g}%, {problem}")
    return float(percent)


def find(variants: Sequence[VariantRecord], name: str, deployment: str) -> VariantRecord:
    for variant in variants:
        if variant.name == name:
            return variant
    raise NotFound(f"deployment {deployment!r} has no variant {name!r}")


def primary_of(variants: Sequence[VariantRecord]) -> VariantRecord:
    return next(v for v in variants if v.role is Role.PRIMARY)


def validate(variants: Sequence[VariantRecord], deployment: str) -> list[VariantRecord]:
    """The variant set, checked (names unique and valid, exactly one primary, percentages in range, live
    shares summing to 100) and with live shares rescaled to sum to exactly 100. A lone live variant
    given no share gets all of it."""
    if not variants:
        raise InvalidArgument(f"deployment {deployment!r} needs at least one variant (its primary)")
    names = [v.name for v in variants]
    for name in names:
        check_name(name, "variant name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidArgument(f"deployment {deployment!r} repeats variant names {duplicates}")
    primaries = [v for v in variants if v.role is Role.PRIMARY]
    if len(primaries) != 1:
        raise InvalidArgument(
            f"deployment {deployment!r} needs exactly one primary variant, not {len(primaries)}"
        )
    for variant in variants:
        check_model_name(variant.model_name)
        if variant.version <= 0:
            raise InvalidArgument(f"variant {variant.name!r} needs a model version >= 1")
        check_share(variant.traffic_percent, f"traffic of variant {variant.name!r}")
    live = [v for v in variants if v.live]
    total = sum(v.traffic_percent for v in live)
    if len(live) == 1 and total == 0.0:
        return [replace(v, traffic_percent=100.0) if v.live else v for v in variants]
    if abs(total - 100.0) > SUM_TOLERANCE:
        raise InvalidArgument(
            f"the traffic of deployment {deployment!r}'s primary and canary variants sums to {total:g}%,"
            " not 100%"
        )
    return [replace(v, traffic_percent=v.traffic_percent * 100.0 / total) if v.live else v for v in variants]


def set_traffic(
    variants: Sequence[VariantRecord], name: str, percent: float, deployment: str
) -> list[VariantRecord]:
    """``name`` gets ``percent``; the other live variants share the rest in their current proportions
    (all of it to the primary when they have none). A shadow's mirror share is simply set. Refused when
    ``percent``, or the share another live variant is rescaled to, is positive but under one bucket."""
    check_share(percent, "traffic_percent")
    target = find(variants, name, deployment)
    if not target.live:
        return [replace(v, traffic_percent=percent) if v.name == name else v for v in variants]
    others = [v for v in variants if v.live and v.name != name]
    rest = 100.0 - percent
    others_total = sum(v.traffic_percent for v in others)
    if not others and rest > SUM_TOLERANCE:
        raise FailedPrecondition(
            f"variant {name!r} is deployment {deployment!r}'s only live variant: it must keep 100%"
        )
    out = []
    for variant in variants:
        if variant.name == name:
            out.append(replace(variant, traffic_percent=percent if others else 100.0))
        elif not variant.live:
            out.append(variant)
        elif others_total > 0.0:
            out.append(replace(variant, traffic_percent=variant.traffic_percent * rest / others_total))
        else:  # the others had nothing: the primary (or, if the target is the primary, all alike) take it
            share = rest if variant.role is Role.PRIMARY else 0.0
            if target.role is Role.PRIMARY:
                share = rest / len(others)
            out.append(replace(variant, traffic_percent=share))
    _refuse_shares_squeezed(variants, out, f"setting variant {name!r} to {percent:g}%")
    return out


def _refuse_shares_squeezed(
    before: Sequence[VariantRecord], after: Sequence[VariantRecord], change: str
) -> None:
    """Refuses ``change`` when it rescaled a variant's share down under one bucket: an A/B variant at
    0.01 % keeping its proportion while another variant takes half would get no requests any more."""
    old = {v.name: v.traffic_percent for v in before}
    for variant in after:
        share = variant.traffic_percent
        if 0.0 < share < MIN_TRAFFIC_PERCENT * (1 - _RESCALE_SLACK) and share < old.get(variant.name, 0.0):
            raise InvalidArgument(
                f"{change} would leave variant {variant.name!r} with {share:g}%, {share_problem(share)}"
            )


def add_variant(
    variants: Sequence[VariantRecord], new: VariantRecord, deployment: str
) -> list[VariantRecord]:
    """``new`` joins at 0 % and then gets its share (so only users moving into it move)."""
    if any(v.name == new.name for v in variants):
        raise FailedPrecondition(f"deployment {deployment!r} already has a variant {new.name!r}")
    if new.role is Role.PRIMARY:
        raise InvalidArgument("a variant added to a running deployment cannot be its primary")
    joined = [*variants, replace(new, traffic_percent=0.0)]
    return set_traffic(joined, new.name, new.traffic_percent, deployment)


def remove_variant(variants: Sequence[VariantRecord], name: str, deployment: str) -> list[VariantRecord]:
    """Drops ``name`` (never the primary); its share goes to the other live variants in proportion."""
    target = find(variants, name, deployment)
    if target.role is Role.PRIMARY:
        raise FailedPrecondition(f"cannot remove deployment {deployment!r}'s primary variant {name!r}")
    emptied = set_traffic(variants, name, 0.0, deployment) if target.live else list(variants)
    return [v for v in emptied if v.name != name]


def canaries_holding_traffic(variants: Sequence[VariantRecord], besides: str = "") -> list[str]:
    """The names of canary-role variants other than ``besides`` with a share of live traffic: while
    there are any, no canary can be promoted (see :func:`promote`)."""
    return sorted(
        v.name for v in variants if v.role is Role.CANARY and v.name != besides and v.traffic_percent > 0.0
    )


def promote(variants: Sequence[VariantRecord], name: str, deployment: str) -> list[VariantRecord]:
    """Blue/green swap: canary ``name`` becomes the primary with the old primary's share added to its
    own, and the old primary leaves the deployment.

    Refused (FAILED_PRECONDITION) while another canary still has a share of traffic: the router gives
    each variant one rendezvous clock (:mod:`kernels.hashing`), so the promoted variant cannot take over
    exactly the old primary's buckets; raising its weight would also take buckets from the other canary,
    moving users between variants that stay. With no other canary holding traffic, the promoted variant
    gets every bucket and nobody else had any."""
    target = find(variants, name, deployment)
    if target.role is not Role.CANARY:
        raise FailedPrecondition(f"variant {name!r} of deployment {deployment!r} is not a canary")
    holding = canaries_holding_traffic(variants, besides=name)
    if holding:
        raise FailedPrecondition(
            f"cannot promote variant {name!r} of deployment {deployment!r} while other canaries hold traffic"
            f" ({', '.join(repr(n) for n in holding)}): promoting would move some of their users to"
            f" {name!r}; roll them back or set their traffic to 0% first"
        )
    old = primary_of(variants)
    share = target.traffic_percent + old.traffic_percent
    return [
        replace(v, role=Role.PRIMARY, traffic_percent=share) if v.name == name else v
        for v in variants
        if v.name != old.name
    ]
