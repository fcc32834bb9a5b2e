"""Stable hashing for traffic routing: routing keys into buckets, and buckets onto weighted variants.

Everything here is a function of bytes and integers only (BLAKE2b, 64-bit integer mixing that wraps the
same on every CPU, and one ``log`` per bucket and variant), so every process on every machine computes
the same assignment: a user keeps their variant across replicas and restarts.

**Buckets.** A routing key hashes, salted per deployment (or experiment), into one of ``BUCKETS``
buckets; changing the salt reshuffles everybody, which is how a new experiment starts fresh.

**Assignment: weighted rendezvous hashing per bucket.** Each variant ``v`` draws, for each bucket ``b``,
a uniform ``u_v(b)`` from its own seed (salt and variant name); its arrival time in a race is
``-ln(u_v(b)) / w_v``, an exponential clock of rate ``w_v``, and the bucket goes to the earliest arrival.
The winner of a race of exponential clocks is ``v`` with probability ``w_v / sum(w)``, so shares are
proportional to the weights up to binomial noise (standard deviation below 0.5 % of traffic with 10,000
buckets). The race gives the two properties routing needs:

* adding or removing a variant never moves a bucket between the variants that remain: the others'
  clocks are unchanged, so a bucket either moves to the newcomer or away from the removed one only;
* raising one variant's weight (the others keeping their weights, or their proportions: scaling every
  other weight by one factor scales their clocks alike and leaves their order unchanged) only moves
  buckets into that variant, because only its clock gets earlier. Lowering it only moves buckets out.

Variants are keyed by name, not by position, so reordering a plan's variants changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: Buckets a routing key hashes into; a variant's share is resolved to 1/BUCKETS of traffic.
BUCKETS = 10_000

#: Index meaning "no variant" (every weight is zero).
UNASSIGNED = -1

#: Weights below this count as zero (a subnormal weight would overflow the arrival times).
MIN_WEIGHT = 1e-9

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _salted(salt: str, tag: bytes) -> hashlib.blake2b:
    """A BLAKE2b state that has absorbed the length-prefixed salt and a domain tag, so that no salt and
    key pair can collide with another by moving bytes between them."""
    salt_bytes = salt.encode()
    state = hashlib.blake2b(digest_size=8)
    state.update(len(salt_bytes).to_bytes(4, "little"))
    state.update(salt_bytes)
    state.update(tag)
    return state


class BucketHasher:
    """Maps routing keys to buckets for one salt. The salted state is built once and copied per key
    (about a microsecond a key)."""

    __slots__ = ("_state", "buckets")

    def __init__(self, salt: str, buckets: int = BUCKETS) -> None:
        if buckets <= 0:
            raise ValueError("buckets must be positive")
        self._state = _salted(salt, b"key\x00")
        self.buckets = buckets

    def bucket(self, routing_key: str) -> int:
        state = self._state.copy()
        state.update(routing_key.encode())
        # 2**64 mod 10,000 = 1,616: the modulo favours low buckets by under 1e-15, which is nothing.
        return int.from_bytes(state.digest(), "little") % self.buckets


def bucket_of(routing_key: str, salt: str, buckets: int = BUCKETS) -> int:
    """The bucket of ``routing_key`` under ``salt`` (build a :class:`BucketHasher` for many keys)."""
    return BucketHasher(salt, buckets).bucket(routing_key)


def variant_seed(salt: str, name: str) -> int:
    """The 64-bit seed of one variant's per-bucket draws."""
    state = _salted(salt, b"variant\x00")
    state.update(name.encode())
    return int.from_bytes(state.digest(), "little")


def splitmix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The SplitMix64 finalizer, elementwise (uint64 arithmetic wraps identically everywhere)."""
    z = values.copy()
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def bucket_uniforms(seed: int, buckets: int = BUCKETS) -> npt.NDArray[np.float64]:
    """One uniform draw in the open interval (0, 1) per bucket, from ``seed``: the top 53 bits of the
    mixed value, centred in their interval so that 0 (whose log is -inf) cannot occur."""
    with np.errstate(over="ignore"):
        counters = np.uint64(seed) + np.arange(1, buckets + 1, dtype=np.uint64) * _GOLDEN_GAMMA
    mixed = splitmix64(counters)
    return ((mixed >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 2.0**53)


def assign_buckets(
    salt: str, names: Sequence[str], weights: Sequence[float], buckets: int = BUCKETS
) -> npt.NDArray[np.int16]:
    """For every bucket, the index (into ``names``) of the variant that serves it, by weighted
    rendezvous hashing; ``UNASSIGNED`` everywhere when no weight is positive. Weights are relative
    (only their ratios matter); a zero weight (below ``MIN_WEIGHT``) gets no bucket. Names must be
    distinct."""
    if len(names) != len(weights):
        raise ValueError("names and weights differ in length")
    if len(set(names)) != len(names):
        raise ValueError("variant names must be distinct")
    if len(names) > np.iinfo(np.int16).max:
        raise ValueError("too many variants")
    for weight in weights:
        if not weight >= 0.0 or weight == float("inf"):  # also refuses NaN
            raise ValueError(f"weights must be finite and non-negative, not {weight}")
    live = [i for i, w in enumerate(weights) if w >= MIN_WEIGHT]
    if not live:
        return np.full(buckets, UNASSIGNED, dtype=np.int16)
    best_time = np.full(buckets, np.inf)
    best = np.full(buckets, UNASSIGNED, dtype=np.int16)
    # By name, so that an exact tie of arrival times (never seen in practice) resolves the same way
    # whatever order the plan lists its variants in.
    for index in sorted(live, key=lambda i: names[i]):
        arrival = -np.log(bucket_uniforms(variant_seed(salt, names[index]), buckets)) / weights[index]
        earlier = arrival < best_time
        best_time[earlier] = arrival[earlier]
        best[earlier] = index
    return best


def give_every_variant_a_bucket(
    salt: str,
    names: Sequence[str],
    weights: Sequence[float],
    table: npt.NDArray[np.int16],
) -> npt.NDArray[np.int16]:
    """``table`` (from :func:`assign_buckets` with the same arguments) with each variant of positive
    weight that won no bucket given one: a small share (one bucket's worth, 0.01 % of 10,000) wins none
    in about a third of salts, and a canary there answered nothing. The bucket given is the one where
    the variant's arrival time is smallest relative to the winner's, which is the first bucket it would
    win as its weight grows: growing it from there still only moves buckets into it. Never a variant's
    only bucket, nor one already given; in name order, so every process gives the same."""
    counts = np.bincount(table[table >= 0], minlength=len(names))
    starved = [i for i, w in enumerate(weights) if w >= MIN_WEIGHT and counts[i] == 0]
    if not starved or (table < 0).all():
        return table
    buckets = table.shape[0]
    out = table.copy()
    owners = sorted({int(i) for i in np.unique(table)})
    arrival = {
        i: -np.log(bucket_uniforms(variant_seed(salt, names[i]), buckets)) / weights[i]
        for i in (*owners, *starved)
    }
    winner_time = np.empty(buckets)
    for owner in owners:
        winner_time[table == owner] = arrival[owner][table == owner]
    for index in sorted(starved, key=lambda i: names[i]):
        held = np.bincount(out[out >= 0], minlength=len(names))
        closeness = arrival[index] / winner_time
        closeness[(held[out] <= 1) | np.isin(out, starved)] = np.inf
        if np.isfinite(closeness).any():  # else more variants than buckets: nothing left to give
            out[int(np.argmin(closeness))] = index
    return out


def mirror_mask(salt: str, name: str, percent: float, buckets: int = BUCKETS) -> npt.NDArray[np.bool_]:
    """The buckets whose requests are mirrored to the shadow variant ``name``: a stable ``percent`` of
    them, drawn from the shadow's own seed (so raising the percentage only adds buckets), and at least
    one for a positive percentage (the bucket of its smallest draw, the first any percentage takes): one
    bucket's worth (0.01 %) drew none in about a third of salts, and the shadow mirrored nothing."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent must be within [0, 100], not {percent}")
    draws = bucket_uniforms(variant_seed(salt, name), buckets)
    mask = draws < percent / 100.0
    if percent > 0.0 and not mask.any():
        mask[int(np.argmin(draws))] = True
    return mask
