"""The Deployments service over real gRPC and SQLite: the lifecycle, the refusals with their status codes,
the model registry's guard, the audit trail, and the plan watch stream."""

from __future__ import annotations

import re
import threading

import pytest
from sqlalchemy import update

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.errors import (
    MAX_STATUS_MESSAGE_BYTES,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from clients.sdk.deployments import DeploymentsClient, variant
from clients.sdk.models import ModelRegistryClient
from clients.serving_rules import MAX_WARMUP_REQUESTS
from control_plane.artifacts.settings import store_for
from control_plane.audit.query import AuditFilter, iter_entries
from control_plane.db import create_db_engine, create_session_factory, pages
from control_plane.deployments.canary import Action, Decision
from control_plane.deployments.core import DeploymentManager
from control_plane.deployments.tables import DeploymentVariantRow
from control_plane.model_registry.registry import ModelRegistry
from tests.integration.deployments.conftest import Models, Plane, wait_until


def shares(deployment: pb.Deployment) -> dict[str, float]:
    return {v.name: round(v.traffic_percent, 6) for v in deployment.variants}


def test_create_read_update_and_delete(deployments: DeploymentsClient, models: Models) -> None:
    blue = models.register("eta")
    created = deployments.create("eta-prod", [variant("eta", blue)], description="ETA")
    assert shares(created) == {"eta-v1": 100.0}
    assert created.routing_salt == "eta-prod" and created.created_by == "alice"
    assert list(created.canary_policy.steps_percent) == [5.0, 25.0, 50.0, 100.0]
    assert deployments.get("eta-prod") == created
    deployments.create("eta-staging", [variant("eta", blue)])
    assert [d.name for d in deployments.list(name_prefix="eta-p")] == ["eta-prod"]
    page = deployments.list_page(page_size=1)
    assert [d.name for d in page.deployments] == ["eta-prod"] and page.next_page_token
    second = deployments.list_page(page_size=1, page_token=page.next_page_token)
    assert [d.name for d in second.deployments] == ["eta-staging"] and not second.next_page_token
    # A token was taken as a name to list after: a garbage one silently gave a short or empty page.
    with pytest.raises(InvalidArgument, match="malformed"):
        deployments.list_page(page_token="eta-prod")
    with pytest.raises(InvalidArgument, match="different name prefix"):
        deployments.list_page(name_prefix="eta-", page_token=page.next_page_token)

    green = models.register("eta")
    updated = deployments.update(
        pb.UpdateDeploymentRequest(
            name="eta-prod",
            description="ETA v2 A/B",
            replace_variants=True,
            variants=[variant("eta", blue, "primary", 50.0), variant("eta", green, "canary", 50.0, name="b")],
        )
    )
    assert shares(updated) == {"eta-v1": 50.0, "b": 50.0}
    assert updated.plan_revision > created.plan_revision and updated.description == "ETA v2 A/B"
    traffic = deployments.set_traffic("eta-prod", "b", 10.0)
    assert shares(traffic) == {"eta-v1": 90.0, "b": 10.0}

    deployments.delete("eta-prod")
    with pytest.raises(NotFound, match="deployment 'eta-prod' not found"):
        deployments.get("eta-prod")


def test_refusals(deployments: DeploymentsClient, models: Models) -> None:
    approved = models.register("eta")
    pending = models.register("eta", mpb.PENDING_MANUAL_APPROVAL)
    rejected = models.register("eta", mpb.REJECTED)
    for version in (pending, rejected):
        with pytest.raises(FailedPrecondition, match="only an Approved version can be deployed"):
            deployments.create("eta-prod", [variant("eta", version)])
    with pytest.raises(NotFound):
        deployments.create("eta-prod", [variant("nope", 1)])
    deployments.create("eta-prod", [variant("eta", approved)])
    with pytest.raises(FailedPrecondition, match="Approved"):
        deployments.start_canary("eta-prod", "eta", pending)
    with pytest.raises(AlreadyExists):
        deployments.create("eta-prod", [variant("eta", approved)])
    with pytest.raises(InvalidArgument, match="exactly one primary"):
        deployments.create("other", [variant("eta", approved, "canary", 100.0)])
    # A valid int64 this large once came back as INTERNAL (it went through a float and overflowed).
    with pytest.raises(InvalidArgument, match="canary bake_seconds must be from 0 to"):
        deployments.create(
            "other", [variant("eta", approved)], canary_policy=pb.CanaryPolicy(bake_seconds=2**63 - 1)
        )
    # Accepted, the data plane loading the version built 2**31 - 1 warm-up requests at once and its
    # memory grew until it was killed; it never served.
    too_many = pb.ServingConfig(warmup_requests=MAX_WARMUP_REQUESTS + 1)
    bound = f"serving warmup_requests must be at most {MAX_WARMUP_REQUESTS}, not {MAX_WARMUP_REQUESTS + 1}"
    with pytest.raises(InvalidArgument, match=f"^{bound}$"):
        deployments.create("other", [variant("eta", approved)], serving=too_many)
    with pytest.raises(InvalidArgument, match=f"^{bound}$"):
        deployments.update(pb.UpdateDeploymentRequest(name="eta-prod", serving=too_many))
    assert deployments.get("eta-prod").serving.warmup_requests == 10
    at_bound = pb.ServingConfig(warmup_requests=MAX_WARMUP_REQUESTS)
    updated = deployments.update(pb.UpdateDeploymentRequest(name="eta-prod", serving=at_bound))
    assert updated.serving.warmup_requests == MAX_WARMUP_REQUESTS
    for call in (
        lambda: deployments.get("ghost"),
        lambda: deployments.delete("ghost"),
        lambda: deployments.set_traffic("ghost", "x", 5.0),
        lambda: deployments.promote("ghost"),
        lambda: deployments.rollback("ghost"),
        lambda: deployments.start_canary("ghost", "eta", approved),
    ):
        with pytest.raises(NotFound, match="deployment 'ghost' not found"):
            call()
    with pytest.raises(NotFound, match="no variant 'ghost'"):
        deployments.set_traffic("eta-prod", "ghost", 5.0)
    with pytest.raises(FailedPrecondition, match="no canary running"):
        deployments.promote("eta-prod")


def test_a_refusal_naming_a_huge_input_keeps_its_status(deployments: DeploymentsClient) -> None:
    """The message echoes the name: at 20,000 characters gRPC dropped the status for its size and the
    caller got RESOURCE_EXHAUSTED "Stream removed" instead of NOT_FOUND. The message is cut instead."""
    name = "x" * 20_000
    with pytest.raises(NotFound) as info:
        deployments.get(name)
    assert info.value.message.startswith("deployment 'xxx")
    assert len(info.value.message) <= MAX_STATUS_MESSAGE_BYTES
    assert re.search(r"\.\.\. \[\d+ more characters cut\]$", info.value.message)


def test_a_rollback_reason_too_long_to_read_back_is_refused_and_nothing_is_rolled_back(
    deployments: DeploymentsClient, models: Models
) -> None:
    # The reason is kept in the deployment's canary state, which every read returns. One of 3.9 MB beside a
    # 3 MB description was committed: the answer, over gRPC's 4 MiB, failed (RESOURCE_EXHAUSTED) though the
    # canary had been rolled back, and no read of the deployment came back after.
    blue, green = models.register("eta"), models.register("eta")
    deployments.create("eta-prod", [variant("eta", blue)], description="d" * 3_000_000)
    deployments.start_canary("eta-prod", "eta", green)
    with pytest.raises(
        InvalidArgument, match=re.escape("rollback reason is 3,900,000 characters long; at most 6,000 are")
    ):
        deployments.rollback("eta-prod", reason="r" * 3_900_000)
    assert deployments.get("eta-prod").canary.status == pb.CANARY_STATUS_PROGRESSING  # nothing written
    assert deployments.rollback("eta-prod", reason="r" * 6000).canary.reason == "r" * 6000


def test_a_deployed_version_cannot_be_deleted(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    version = models.register("eta")
    deployments.create("eta-prod", [variant("eta", version)])
    with ModelRegistryClient(plane.address, timeout=20) as registry:
        with pytest.raises(FailedPrecondition, match="deployment 'eta-prod'"):
            registry.delete_version("eta", version)
        lineage = registry.lineage("eta", version)
        assert [d.name for d in lineage.deployments] == ["eta-prod"]
        deployments.delete("eta-prod")
        registry.delete_version("eta", version)


def test_manual_canary_promote_and_rollback(deployments: DeploymentsClient, models: Models) -> None:
    blue, green, red = models.register("eta"), models.register("eta"), models.register("eta")
    deployments.create("eta-prod", [variant("eta", blue), variant("eta", blue, "shadow", 20.0, name="dark")])
    started = deployments.start_canary("eta-prod", "eta", green)
    assert shares(started) == {"eta-v1": 95.0, "dark": 20.0, "eta-v2": 5.0}
    assert started.canary.status == pb.CANARY_STATUS_PROGRESSING and started.canary.variant == "eta-v2"
    with pytest.raises(FailedPrecondition, match="canary 'eta-v2' running"):
        deployments.set_traffic("eta-prod", "eta-v2", 50.0)
    with pytest.raises(FailedPrecondition, match="canary 'eta-v2' running"):
        deployments.start_canary("eta-prod", "eta", red)
    promoted = deployments.promote("eta-prod")
    assert shares(promoted) == {"dark": 20.0, "eta-v2": 100.0}
    assert [v.role for v in promoted.variants if v.name == "eta-v2"] == [pb.VARIANT_ROLE_PRIMARY]
    assert promoted.canary.status == pb.CANARY_STATUS_PROMOTED

    deployments.start_canary("eta-prod", "eta", red)
    rolled = deployments.rollback("eta-prod", reason="dashboards look wrong")
    assert shares(rolled) == {"dark": 20.0, "eta-v2": 100.0}
    assert rolled.canary.status == pb.CANARY_STATUS_ROLLED_BACK
    assert (rolled.canary.traffic_percent, rolled.canary.reason) == (0.0, "dashboards look wrong")


def test_a_controller_decision_never_moves_a_canary_started_again_after_it_observed(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    """The controller observed a canary, a person rolled it back and started the same version again
    (same variant, step 0), then the controller applied its decision: the new canary, with an hour to
    bake, went from 5% to 25% at once on the old run's evidence."""
    blue, green = models.register("eta"), models.register("eta")
    deployments.create("eta-prod", [variant("eta", blue)])
    hour = pb.CanaryPolicy(steps_percent=[5, 25, 100], bake_seconds=3600, min_requests=1)
    observed = deployments.start_canary("eta-prod", "eta", green, policy=hour).canary
    deployments.rollback("eta-prod", reason="dashboards look wrong")
    again = deployments.start_canary("eta-prod", "eta", green, policy=hour).canary
    assert (again.variant, again.step_index) == (observed.variant, observed.step_index)

    engine = create_db_engine(plane.db_url)
    try:
        sessions = create_session_factory(engine)
        manager = DeploymentManager(sessions, ModelRegistry(sessions, store_for(plane.home)))
        advance = Decision(Action.ADVANCE, "healthy at 5%", next_step=1, next_percent=25.0)
        assert manager.apply_decision("eta-prod", observed, advance, actor="canary-controller") is None
        assert manager.note_hold("eta-prod", observed, "waiting for the old run") is None
        assert shares(deployments.get("eta-prod")) == {"eta-v1": 95.0, "eta-v2": 5.0}
        # The canary as it is now is still the controller's to move.
        moved = manager.apply_decision("eta-prod", again, advance, actor="canary-controller")
        assert moved is not None and shares(moved) == {"eta-v1": 75.0, "eta-v2": 25.0}
    finally:
        engine.dispose()


def test_a_canary_cannot_start_beside_another_canary_holding_traffic(
    deployments: DeploymentsClient, models: Models
) -> None:
    # Beside the B of an A/B test the canary was accepted, advanced, and then every promotion was refused
    # ("while other canaries hold traffic"): it stayed PROGRESSING at its last step for ever.
    blue, ab, green = models.register("eta"), models.register("eta"), models.register("eta")
    deployments.create(
        "eta-prod", [variant("eta", blue, "primary", 80.0), variant("eta", ab, "canary", 20.0, name="ab")]
    )
    with pytest.raises(
        FailedPrecondition,
        match=r"canary variants holding traffic \('ab'\).*set their traffic to 0 or roll them back first",
    ):
        deployments.start_canary("eta-prod", "eta", green)
    assert shares(deployments.get("eta-prod")) == {"eta-v1": 80.0, "ab": 20.0}  # nothing applied
    deployments.set_traffic("eta-prod", "ab", 0.0)
    started = deployments.start_canary("eta-prod", "eta", green)
    assert started.canary.status == pb.CANARY_STATUS_PROGRESSING
    assert shares(deployments.promote("eta-prod")) == {"ab": 0.0, "eta-v3": 100.0}


def test_a_running_canary_keeps_its_share_when_another_variant_is_rolled_back(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    # Rolling back another live variant handed its share to every live variant, the running canary's
    # included: the canary's traffic changed behind the controller, and its state kept the old share.
    blue, ab, old, green, dark = (models.register("eta") for _ in range(5))
    deployments.create(
        "eta-prod",
        [
            variant("eta", blue, "primary", 80.0),
            variant("eta", ab, "canary", 20.0, name="ab"),
            variant("eta", old, "canary", 0.0, name="old"),
            variant("eta", dark, "shadow", 10.0, name="dark"),
        ],
    )
    deployments.set_traffic("eta-prod", "ab", 0.0)
    deployments.start_canary("eta-prod", "eta", green)
    # A shadow holds no traffic, and a live variant at 0% gives none back: both may go.
    deployments.rollback("eta-prod", "dark")
    kept = deployments.rollback("eta-prod", "old")
    assert shares(kept) == {"eta-v1": 95.0, "ab": 0.0, "eta-v4": 5.0}
    # An A/B variant with traffic beside a running canary, as a deployment stored before StartCanary
    # refused that (test_a_canary_cannot_start_beside_another_canary_holding_traffic) still has it.
    engine = create_db_engine(plane.db_url)
    with engine.begin() as connection:
        for name, percent in (("eta-v1", 75.0), ("ab", 20.0)):
            connection.execute(
                update(DeploymentVariantRow)
                .where(DeploymentVariantRow.name == name)
                .values(traffic_percent=percent)
            )
    engine.dispose()
    with pytest.raises(
        FailedPrecondition,
        match="has canary 'eta-v4' running: promote or roll it back before you roll back live variant 'ab'",
    ):
        deployments.rollback("eta-prod", "ab")
    assert shares(deployments.get("eta-prod")) == {"eta-v1": 75.0, "ab": 20.0, "eta-v4": 5.0}  # unchanged
    deployments.rollback("eta-prod")  # the way out: the canary first, then the A/B variant
    assert shares(deployments.rollback("eta-prod", "ab")) == {"eta-v1": 100.0}


def test_the_canary_policy_cannot_change_while_a_canary_runs(
    deployments: DeploymentsClient, models: Models
) -> None:
    # The running canary's step_index points into the policy's steps: an edit to [10, 100] under a canary
    # at step 2 once left the canary controller unable to decide anything.
    blue, green = models.register("eta"), models.register("eta")
    deployments.create("eta-prod", [variant("eta", blue)])
    running = deployments.start_canary("eta-prod", "eta", green)
    edit = pb.UpdateDeploymentRequest(
        name="eta-prod", description="tighter", canary_policy=pb.CanaryPolicy(steps_percent=[10.0, 100.0])
    )
    with pytest.raises(
        FailedPrecondition,
        match="canary 'eta-v2' running: promote or roll it back before you change its canary policy",
    ):
        deployments.update(edit)
    unchanged = deployments.get("eta-prod")
    assert unchanged.canary_policy == running.canary_policy and unchanged.description == ""  # nothing applied

    same = pb.UpdateDeploymentRequest(
        name="eta-prod", description="same policy", canary_policy=running.canary_policy
    )
    assert deployments.update(same).description == "same policy"  # re-sending the policy in force is fine
    deployments.rollback("eta-prod")
    assert list(deployments.update(edit).canary_policy.steps_percent) == [10.0, 100.0]


def test_a_policy_with_no_step_below_100_is_refused_where_it_is_sent(
    deployments: DeploymentsClient, models: Models
) -> None:
    # A canary starts at its policy's first step and is promoted on reaching 100%, so steps of [100] can
    # start none. CreateDeployment and UpdateDeployment stored such a policy, and every StartCanary after,
    # sending no policy of its own, was refused INVALID_ARGUMENT for one the caller had not sent.
    blue, green = models.register("eta"), models.register("eta")
    straight = pb.CanaryPolicy(steps_percent=[100.0])
    refusal = re.escape("canary steps need one below 100% (where a canary starts; 100% is its promotion)")
    with pytest.raises(InvalidArgument, match=refusal):
        deployments.create("eta-prod", [variant("eta", blue)], canary_policy=straight)
    deployments.create("eta-prod", [variant("eta", blue)])
    with pytest.raises(InvalidArgument, match=refusal):
        deployments.update(pb.UpdateDeploymentRequest(name="eta-prod", canary_policy=straight))
    started = deployments.start_canary("eta-prod", "eta", green)  # the policy in force was kept
    assert started.canary.traffic_percent == 5.0
    deployments.rollback("eta-prod")
    with pytest.raises(InvalidArgument, match=refusal):
        deployments.start_canary("eta-prod", "eta", green, policy=straight)


def test_the_routing_salt_cannot_change_while_a_canary_runs(
    deployments: DeploymentsClient, models: Models
) -> None:
    """A new salt moves every routing key to other buckets: mid-canary it moved users between the primary
    and the canary (whose metrics then mixed both populations). Refused like the policy and variants;
    re-sending the salt in force is fine."""
    blue, green = models.register("eta"), models.register("eta")
    deployments.create("eta-prod", [variant("eta", blue)])
    running = deployments.start_canary("eta-prod", "eta", green)
    with pytest.raises(FailedPrecondition, match="before you change its routing salt"):
        deployments.update(pb.UpdateDeploymentRequest(name="eta-prod", routing_salt="experiment-2"))
    assert deployments.get("eta-prod").routing_salt == running.routing_salt
    same = pb.UpdateDeploymentRequest(name="eta-prod", routing_salt=running.routing_salt, description="x")
    assert deployments.update(same).description == "x"
    deployments.rollback("eta-prod")
    salted = deployments.update(pb.UpdateDeploymentRequest(name="eta-prod", routing_salt="experiment-2"))
    assert salted.routing_salt == "experiment-2"


def test_every_mutation_is_audited(plane: Plane, deployments: DeploymentsClient, models: Models) -> None:
    blue, green = models.register("eta"), models.register("eta")
    deployments.create("eta-prod", [variant("eta", blue)])
    deployments.start_canary("eta-prod", "eta", green)
    deployments.rollback("eta-prod", reason="no")
    deployments.delete("eta-prod")
    engine = create_db_engine(plane.db_url)
    try:
        entries = list(iter_entries(create_session_factory(engine), AuditFilter("deployment", "eta-prod")))
    finally:
        engine.dispose()
    assert [(e.action, e.actor) for e in entries] == [
        ("create", "alice"),
        ("start_canary", "alice"),
        ("rollback", "alice"),
        ("delete", "alice"),
    ]
    assert entries[0].before is None and entries[-1].after is None
    assert entries[2].after is not None and entries[2].after["canary"]["reason"] == "no"


def test_watch_streams_full_plans_on_connect_and_on_change(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    blue = models.register("eta")
    deployments.create("eta-prod", [variant("eta", blue)])
    received: list[pb.DeploymentPlanSnapshot] = []
    got_two = threading.Event()
    watcher = DeploymentsClient(plane.address)

    def watch() -> None:
        try:
            for snapshot in watcher.watch_plans():
                received.append(snapshot)
                if len(received) == 2:
                    got_two.set()
                    return
        except Exception:  # the channel closes at the end of the test
            return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(received) >= 1)
        deployments.start_canary("eta-prod", "eta", models.register("eta"))
        assert got_two.wait(10)
    finally:
        watcher.close()
        thread.join(5)
    first, second = received
    assert second.revision > first.revision
    (plan,) = first.plans
    (planned,) = plan.variants
    stored = models.registry.get_version("eta", blue)
    assert planned.model.artifact_sha256 == stored.artifact.sha256
    assert planned.model.artifact_uri == stored.artifact.uri
    assert [t.name for t in planned.model.inputs] == ["x"] and planned.model.serving.max_batch_size == 32
    assert [v.name for v in second.plans[0].variants] == ["eta-v1", "eta-v2"]


def test_a_version_that_imputes_missing_values_is_planned_to_take_nan(
    plane: Plane, deployments: DeploymentsClient, models: Models
) -> None:
    """The built-in trainer's versions impute NaN with the training mean in the graph: their plan lets NaN
    through (ModelInfer) and has Predict feed a missing feature as NaN, whatever the deployment says;
    the data plane fed them 0 instead."""
    imputing = models.register("eta", imputes_missing=True)
    plain = models.register("eta")
    with ModelRegistryClient(plane.address) as registry:
        assert registry.get_version("eta", imputing).signature.imputes_missing
        assert not registry.get_version("eta", plain).signature.imputes_missing
    deployments.create("eta-prod", [variant("eta", imputing)])
    deployments.create("eta-plain", [variant("eta", plain)])
    watcher = DeploymentsClient(plane.address)
    try:
        snapshot = next(iter(watcher.watch_plans()))
    finally:
        watcher.close()
    planned = {p.deployment: p.variants[0].model.serving for p in snapshot.plans}
    assert planned["eta-prod"].allow_non_finite and not planned["eta-plain"].allow_non_finite


def test_list_cuts_a_page_by_size_and_loses_no_deployment(
    deployments: DeploymentsClient, models: Models
) -> None:
    # A description has no bound of its own: three of 1.5 MB made a 4.5 MB ListDeployments reply, over
    # gRPC's 4 MiB, and every listing (aetherctl deploy list, the SDK's list) failed RESOURCE_EXHAUSTED.
    version = models.register("eta")
    names = [f"eta-{index}" for index in range(5)]
    for name in names:
        deployments.create(name, [variant("eta", version)], description=name * 300_000)

    first = deployments.list_page()  # the default page size, 100
    assert [d.name for d in first.deployments] == ["eta-0"] and first.next_page_token
    seen = [d.name for d in first.deployments]
    token = first.next_page_token
    while token:
        page = deployments.list_page(page_token=token)
        assert page.deployments and page.ByteSize() <= pages.MAX_PAGE_BYTES + 16
        seen += [d.name for d in page.deployments]
        token = page.next_page_token
    assert seen == names
    assert [d.name for d in deployments.list()] == names
    assert all(d.description == d.name * 300_000 for d in deployments.list(name_prefix="eta-3"))


def test_an_explicit_zero_bake_is_honoured_and_an_absent_one_takes_the_default(
    deployments: DeploymentsClient, models: Models
) -> None:
    # bake_seconds was a plain proto3 scalar: an explicit 0 ("advance as soon as min_requests arrived")
    # went over the wire as nothing at all and was stored as the 300 s default. Now the field has
    # presence; a client that leaves it unset (as every client built before sends a 0: as nothing) still
    # gets the default.
    blue, green = models.register("eta"), models.register("eta")
    no_bake = pb.CanaryPolicy(bake_seconds=0, steps_percent=[50.0, 100.0])
    created = deployments.create("eta-prod", [variant("eta", blue)], canary_policy=no_bake)
    assert created.canary_policy.bake_seconds == 0 and created.canary_policy.HasField("bake_seconds")
    assert deployments.get("eta-prod").canary_policy.bake_seconds == 0  # as stored, read back

    unset = pb.CanaryPolicy(steps_percent=[50.0, 100.0])
    assert not unset.HasField("bake_seconds")
    updated = deployments.update(pb.UpdateDeploymentRequest(name="eta-prod", canary_policy=unset))
    assert updated.canary_policy.bake_seconds == 300

    started = deployments.start_canary("eta-prod", "eta", green, policy=no_bake)
    assert started.canary_policy.bake_seconds == 0
    deployments.rollback("eta-prod")
    restarted = deployments.start_canary("eta-prod", "eta", green, policy=pb.CanaryPolicy())
    assert restarted.canary_policy.bake_seconds == 300


def test_a_share_under_one_routing_bucket_is_refused_naming_the_minimum(
    deployments: DeploymentsClient, models: Models
) -> None:
    # The router hashes routing keys into 10,000 buckets and gives each live variant whole buckets: a
    # share under one bucket (0.01 %) got none, so such a canary answered nothing and the controller
    # waited for its requests for ever. Each way a share is set refuses it, naming the minimum.
    blue, green = models.register("eta"), models.register("eta")
    minimum = r"below the minimum of 0\.01% \(one of the router's 10,000 buckets\)"
    with pytest.raises(InvalidArgument, match=f"traffic of variant 'b' is 0.005%, {minimum}"):
        deployments.create(
            "tiny",
            [variant("eta", blue, "primary", 99.995), variant("eta", green, "canary", 0.005, name="b")],
        )
    with pytest.raises(InvalidArgument, match=f"traffic of variant 'dark' is 0.001%, {minimum}"):
        deployments.create(
            "tiny", [variant("eta", blue), variant("eta", green, "shadow", 0.001, name="dark")]
        )
    with pytest.raises(InvalidArgument, match=f"canary step 0.005% is {minimum}"):
        deployments.create(
            "tiny", [variant("eta", blue)], canary_policy=pb.CanaryPolicy(steps_percent=[0.005, 50.0, 100.0])
        )
    deployments.create("eta-prod", [variant("eta", blue), variant("eta", green, "shadow", 20.0, name="dark")])
    with pytest.raises(InvalidArgument, match=f"canary step 0.001% is {minimum}"):
        deployments.start_canary(
            "eta-prod", "eta", green, policy=pb.CanaryPolicy(steps_percent=[0.001, 100.0])
        )
    assert deployments.get("eta-prod").canary.status == pb.CANARY_STATUS_UNSPECIFIED  # nothing started
    with pytest.raises(InvalidArgument, match=f"traffic_percent is 0.009%, {minimum}"):
        deployments.set_traffic("eta-prod", "dark", 0.009)

    # One bucket exactly is served; so is 0 (no traffic at all, as asked).
    started = deployments.start_canary(
        "eta-prod", "eta", green, policy=pb.CanaryPolicy(steps_percent=[0.01, 100.0])
    )
    assert shares(started)["eta-v2"] == 0.01
    deployments.rollback("eta-prod")
    red = models.register("eta")
    with_ab = deployments.update(
        pb.UpdateDeploymentRequest(
            name="eta-prod",
            replace_variants=True,
            variants=[
                variant("eta", blue, "primary", 89.99),
                variant("eta", green, "canary", 0.01, name="ab"),
                variant("eta", red, "canary", 10.0, name="c"),
            ],
        )
    )
    assert shares(with_ab) == {"eta-v1": 89.99, "ab": 0.01, "c": 10.0}
    # A share rescaled under the minimum is refused too: the A/B variant keeping its proportion with the
    # primary while the other canary rises to 55 % would fall to 0.005 %.
    with pytest.raises(InvalidArgument, match=f"would leave variant 'ab' with 0.005%, {minimum}"):
        deployments.set_traffic("eta-prod", "c", 55.0)
    assert shares(deployments.get("eta-prod")) == shares(with_ab)  # nothing applied
