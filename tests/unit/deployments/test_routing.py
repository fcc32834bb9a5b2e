"""The data-plane router over plans built from the wire: users keep their variant, shares follow the
weights, adding/removing a variant or growing a canary moves only the users it must, shadows mirror a
stable share, and the ModelSpecs carry what the control plane sent."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import deployments_pb2 as pb
from data_plane.deployment_plan import EMPTY_PLANS, Role, plan_from_proto, plans_from_snapshot
from data_plane.deployment_watch import shared_specs
from data_plane.routing import choose_variant
from tests.unit.deployments.plans import plan

USERS = [f"user-{i}" for i in range(4000)]


def served(message: pb.DeploymentPlan) -> dict[str, str]:
    built = plan_from_proto(message)
    return {user: choose_variant(built, user).primary.name for user in USERS}


def test_a_user_always_gets_the_same_variant_and_shares_follow_weights() -> None:
    built = plan_from_proto(plan("eta", ("blue", "primary", 80.0, 1), ("green", "canary", 20.0, 2)))
    first = {u: choose_variant(built, u).primary.name for u in USERS}
    again = plan_from_proto(plan("eta", ("green", "canary", 20.0, 2), ("blue", "primary", 80.0, 1)))
    assert {u: choose_variant(again, u).primary.name for u in USERS} == first  # order does not matter
    share = Counter(first.values())["green"] / len(USERS)
    assert abs(share - 0.20) < 0.035


def test_the_salt_reshuffles_users() -> None:
    a = served(plan("eta", ("blue", "primary", 50.0, 1), ("green", "canary", 50.0, 2), salt="exp-1"))
    b = served(plan("eta", ("blue", "primary", 50.0, 1), ("green", "canary", 50.0, 2), salt="exp-2"))
    changed = sum(a[u] != b[u] for u in USERS) / len(USERS)
    assert 0.4 < changed < 0.6  # independent assignments agree half the time


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(1.0, 60.0), min_size=2, max_size=4), st.floats(1.0, 40.0))
def test_adding_and_removing_a_variant_moves_nobody_between_the_others(
    weights: list[float], added: float
) -> None:
    base = [(f"v{i}", "primary" if i == 0 else "canary", w, i + 1) for i, w in enumerate(weights)]
    before = served(plan("eta", *base))
    after = served(plan("eta", *base, ("new", "canary", added, 9)))
    assert all(after[u] in (before[u], "new") for u in USERS)
    removed = served(plan("eta", *base[:-1]))
    assert all(removed[u] == before[u] for u in USERS if before[u] != base[-1][0])


def test_canary_steps_only_move_users_into_the_canary() -> None:
    previous: dict[str, str] | None = None
    for step in (5.0, 25.0, 50.0, 75.0):
        now = served(
            plan(
                "eta",
                ("blue", "primary", (100 - step) * 0.7, 1),
                ("ab", "canary", (100 - step) * 0.3, 3),
                ("green", "canary", step, 2),
            )
        )
        if previous is not None:
            assert all(now[u] == previous[u] or now[u] == "green" for u in USERS)
            assert all(now[u] == "green" for u in USERS if previous[u] == "green")
        previous = now


def test_shadows_get_a_stable_share_and_never_answer() -> None:
    built = plan_from_proto(
        plan("eta", ("blue", "primary", 100.0, 1), ("dark", "shadow", 30.0, 4), ("all", "shadow", 100.0, 5))
    )
    routed = [choose_variant(built, u) for u in USERS]
    assert all(r.primary.name == "blue" for r in routed)
    assert all("all" in [s.name for s in r.shadows] for r in routed)
    mirrored = sum("dark" in [s.name for s in r.shadows] for r in routed) / len(USERS)
    assert abs(mirrored - 0.30) < 0.035
    assert [s.name for s in choose_variant(built, "user-7").shadows] == [
        s.name for s in choose_variant(built, "user-7").shadows
    ]


def test_variants_carry_model_specs_from_the_plan() -> None:
    built = plan_from_proto(plan("eta", ("blue", "primary", 100.0, 7)))
    spec = built.primary.model
    assert (spec.name, spec.version, spec.artifact_uri) == ("eta", 7, "/artifacts/eta/7")
    assert spec.inputs[0].shape == (-1, 4) and spec.outputs[0].name == "y"
    assert spec.feature_refs == ("rider@1:trips",)
    assert (spec.warmup_requests, spec.max_batch_size, spec.max_queue_delay_us) == (10, 32, 2000)
    assert built.primary.role is Role.PRIMARY and built.routing_salt == "eta"


def test_a_plan_needs_exactly_one_primary() -> None:
    with pytest.raises(ValueError, match="primary"):
        plan_from_proto(plan("eta", ("a", "canary", 100.0, 1)))


def test_unchanged_plans_are_reused_across_snapshots() -> None:
    first = plans_from_snapshot(
        pb.DeploymentPlanSnapshot(revision=3, plans=[plan("a", ("x", "primary", 100.0, 1), revision=2)])
    )
    second = plans_from_snapshot(
        pb.DeploymentPlanSnapshot(
            revision=4,
            plans=[plan("a", ("x", "primary", 100.0, 1), revision=2), plan("b", ("y", "primary", 100.0, 2))],
        ),
        first,
    )
    assert second.get("a") is first.get("a")
    assert set(second.model_specs()) == {("eta", 1), ("eta", 2)}


def test_a_plan_of_a_reused_revision_with_other_content_replaces_the_held_one() -> None:
    # A control plane restored from a backup (or on a fresh database) numbers its revisions from there
    # again: the same plan revision can come back planning another version.
    held = plans_from_snapshot(
        pb.DeploymentPlanSnapshot(revision=5, plans=[plan("a", ("eta-v1", "primary", 100.0, 1), revision=1)])
    )
    restored = plans_from_snapshot(
        pb.DeploymentPlanSnapshot(revision=1, plans=[plan("a", ("eta-v2", "primary", 100.0, 2), revision=1)]),
        held,
    )
    replaced = restored.get("a")
    assert replaced is not None and replaced is not held.get("a")
    assert (replaced.primary.name, replaced.primary.model.version) == ("eta-v2", 2)
    assert set(restored.model_specs()) == {("eta", 2)}
    assert shared_specs(restored, held, {})[("eta", 2)].version == 2


def test_deployments_sharing_a_version_get_the_serving_config_of_the_last_plan_applied() -> None:
    def shared(deployment: str, batch: int, revision: int = 1) -> pb.DeploymentPlan:
        message = plan(deployment, ("x", "primary", 100.0, 1), revision=revision)
        message.variants[0].model.serving.max_batch_size = batch
        return message

    first = plans_from_snapshot(pb.DeploymentPlanSnapshot(revision=1, plans=[shared("a", 8), shared("b", 8)]))
    applied = shared_specs(first, EMPTY_PLANS, {})
    assert applied[("eta", 1)].max_batch_size == 8
    # "a" changes its config: its plan is the last applied, whatever the order in the snapshot.
    second = plans_from_snapshot(
        pb.DeploymentPlanSnapshot(revision=2, plans=[shared("a", 16, 2), shared("b", 8)]), first
    )
    applied = shared_specs(second, first, applied)
    assert applied[("eta", 1)].max_batch_size == 16
    # A later snapshot that changes neither keeps what was applied.
    third = plans_from_snapshot(
        pb.DeploymentPlanSnapshot(revision=3, plans=[shared("b", 8), shared("a", 16, 2)]), second
    )
    assert shared_specs(third, second, applied)[("eta", 1)].max_batch_size == 16


def test_a_share_of_one_bucket_is_served_under_every_salt() -> None:
    # A variant gets whole buckets by a weighted race per bucket: at 0.01 % (one of 10,000 buckets) it
    # won none under about a third of salts, so such a canary answered nothing and the controller waited
    # for its requests for ever; a shadow at 0.01 % likewise mirrored nothing. Now a variant or shadow
    # with a positive share always gets at least the bucket it comes closest to winning.
    for i in range(60):
        built = plan_from_proto(
            plan(
                "eta",
                ("blue", "primary", 99.99, 1),
                ("green", "canary", 0.01, 2),
                ("dark", "shadow", 0.01, 3),
                salt=f"salt-{i}",
            )
        )
        assert (built.bucket_variant == built.live_variants.index(built.variants[1])).sum() >= 1, i
        assert built.shadow_masks[0].sum() >= 1, i


def test_a_bucket_given_to_a_small_share_stays_with_it_as_the_share_grows() -> None:
    # The bucket given is the first the variant would win as its share grows, so growing a canary from a
    # given bucket still only moves users into it.
    for i in range(60):
        previous = None
        for step in (0.01, 0.02, 0.05, 1.0, 5.0):
            built = plan_from_proto(
                plan("eta", ("blue", "primary", 100 - step, 1), ("green", "canary", step, 2), salt=f"s{i}")
            )
            canary = built.bucket_variant == 1
            if previous is not None:
                assert (canary | ~previous).all(), (i, step)
            previous = canary
