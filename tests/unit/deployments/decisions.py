"""Canary decisions in tests on evidence that reaches the present."""

from __future__ import annotations

from control_plane.deployments.canary import Decision, Observation, Policy, decide


def decide_fresh(
    policy: Policy,
    step_index: int,
    baked_seconds: float,
    canary: Observation,
    primary: Observation,
    *,
    read_through: bool = True,
) -> Decision:
    """:func:`~control_plane.deployments.canary.decide` for a canary whose newest entry was logged just
    now (``newest_canary_age_s=0``), on a window that is the whole step (``whole_step=None``): the
    freshness rule and restarted windows have their own tests."""
    return decide(
        policy,
        step_index,
        baked_seconds,
        canary,
        primary,
        read_through=read_through,
        newest_canary_age_s=0.0,
        whole_step=None,
    )
