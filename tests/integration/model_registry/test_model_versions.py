"""The model registry over real gRPC: numbering under concurrency, approval, aliases, deploy checks,
deletes refused while deployed, and the refusals the issue lists."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from clients.sdk.models import ModelRegistryClient, signature
from control_plane.audit.query import AuditFilter, query_page
from control_plane.db import create_db_engine, create_session_factory, pages
from control_plane.db.engine import read_session
from control_plane.model_registry.validation import version_token
from tests.integration.model_registry.conftest import Plane
from tests.integration.model_registry.test_lineage import run_cli


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx weights " * 100)
    return path


def test_twenty_concurrent_registrations_get_versions_one_to_twenty(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    sha256 = models.artifacts.upload_file(artifact).sha256
    models.create_model("eta")
    start = threading.Barrier(20)

    def register(_: int) -> int:
        with ModelRegistryClient(plane.address, timeout=60) as client:
            start.wait()
            return int(client.register_version("eta", artifact_sha256=sha256, create_model=False).version)

    with ThreadPoolExecutor(20) as pool:
        versions = list(pool.map(register, range(20)))
    assert sorted(versions) == list(range(1, 21))
    assert [v.version for v in models.list_versions("eta")] == list(range(1, 21))
    assert models.get_model("eta").latest_version == 20


def test_concurrent_registrations_creating_the_same_new_model(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    sha256 = models.artifacts.upload_file(artifact).sha256
    start = threading.Barrier(8)

    def register(_: int) -> int:
        with ModelRegistryClient(plane.address, timeout=60) as client:
            start.wait()
            return int(client.register_version("fresh", artifact_sha256=sha256).version)

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(register, range(8))) == list(range(1, 9))


def test_version_records_everything_it_links_to(
    models: ModelRegistryClient, artifact: Path, rider_stats: str, make_run: Callable[..., str]
) -> None:
    run_id = make_run(params={"lr": "0.1"})
    sig = signature([("features", "float32", (-1, 2))], [("eta_seconds", "float32", (-1,))])
    version = models.register_version(
        "eta",
        artifact,
        run_id=run_id,
        signature=sig,
        dataset_hash="d" * 64,
        dataset_query='{"entity_df": "trips.parquet", "features": ["rider_stats@2:trips"]}',
        feature_refs=["rider_stats@2:trips", "rider_stats@2:rating"],
        hyperparameters={"lr": "0.1"},
        metrics={"rmse": 41.5},
        git_commit="a1b2c3d",
        description="first",
    )
    assert (version.model_name, version.version, version.run_id) == ("eta", 1, run_id)
    assert version.artifact.size == artifact.stat().st_size
    assert [(t.name, list(t.shape)) for t in version.signature.inputs] == [("features", [-1, 2])]
    assert list(version.feature_refs) == ["rider_stats@2:trips", "rider_stats@2:rating"]
    assert (version.approval.status, version.created_by) == (pb.PENDING_MANUAL_APPROVAL, "alice")
    fetched = models.get_version("eta", 1)
    assert fetched == version
    assert models.get_version("eta") == version  # latest


def test_refusals(
    models: ModelRegistryClient, artifact: Path, rider_stats: str, make_run: Callable[..., str]
) -> None:
    sha256 = models.artifacts.upload_file(artifact).sha256
    with pytest.raises(NotFound, match="run 'nope' not found"):
        models.register_version("eta", artifact_sha256=sha256, run_id="nope")
    with pytest.raises(NotFound, match="artifact"):
        models.register_version("eta", artifact_sha256="0" * 64)
    with pytest.raises(NotFound, match="'rider_stats' version 7"):
        models.register_version("eta", artifact_sha256=sha256, feature_refs=["rider_stats@7:trips"])
    with pytest.raises(NotFound, match="feature 'rating' not found in feature view 'rider_stats' version 1"):
        models.register_version("eta", artifact_sha256=sha256, feature_refs=["rider_stats@1:rating"])
    with pytest.raises(InvalidArgument, match="view@version:feature"):
        models.register_version("eta", artifact_sha256=sha256, feature_refs=["rider_stats:trips"])
    with pytest.raises(InvalidArgument, match="not a finite number"):
        models.register_version("eta", artifact_sha256=sha256, metrics={"rmse": float("nan")})
    with pytest.raises(InvalidArgument, match="dtype"):
        models.register_version("eta", artifact_sha256=sha256, signature=signature([("x", "float", [1])], []))
    with pytest.raises(NotFound, match="registered model 'eta' not found"):
        models.register_version("eta", artifact_sha256=sha256, create_model=False)
    # Nothing above left a version or a model behind: refused registrations roll back whole.
    assert models.list_models() == []
    models.create_model("eta")
    with pytest.raises(AlreadyExists):
        models.create_model("eta")
    with pytest.raises(NotFound):
        models.get_version("eta", 1)


def test_approval_aliases_and_deploy_check(models: ModelRegistryClient, artifact: Path) -> None:
    for _ in range(3):
        models.register_version("eta", artifact)
    with pytest.raises(FailedPrecondition, match="PendingManualApproval"):
        models.check_deployable("eta", 1)

    approved = models.approve("eta", 1, "beats the champion on rmse")
    assert (approved.approval.status, approved.approval.actor) == (pb.APPROVED, "alice")
    assert approved.approval.reason == "beats the champion on rmse"
    assert models.check_deployable("eta", 1).version == 1
    repeated = models.approve("eta", 1, "beats the champion on rmse")  # an exact repeat: no change
    assert repeated.approval == approved.approval
    with pytest.raises(FailedPrecondition, match=r"already Approved by 'alice'.*nothing was changed"):
        models.approve("eta", 1)  # another reason: refused, the first one kept
    with pytest.raises(FailedPrecondition, match="already Approved"):
        models.reject("eta", 1, "changed my mind")

    models.reject("eta", 2, "leaks the label")
    with pytest.raises(FailedPrecondition, match="already Rejected"):
        models.approve("eta", 2)
    with pytest.raises(FailedPrecondition, match="Rejected"):
        models.check_deployable("eta", 2)
    assert [v.version for v in models.list_versions("eta", status=pb.APPROVED)] == [1]

    assert list(models.set_alias("eta", "champion", 1).aliases) == ["champion"]
    models.set_alias("eta", "challenger", 3)
    assert models.get_by_alias("eta", "challenger").version == 3
    models.set_alias("eta", "champion", 3)  # moves
    assert models.get_by_alias("eta", "champion").version == 3
    assert dict(models.get_model("eta").aliases) == {"champion": 3, "challenger": 3}
    models.delete_alias("eta", "challenger")
    with pytest.raises(NotFound, match="no alias 'challenger'"):
        models.get_by_alias("eta", "challenger")
    with pytest.raises(NotFound):
        models.set_alias("eta", "champion", 9)


def test_delete_refused_while_deployed_and_numbers_never_reused(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    models.register_version("eta", artifact)
    models.register_version("eta", artifact)
    models.set_alias("eta", "champion", 2)
    plane.deployments.serving[("eta", 2)] = ["eta-prod"]
    with pytest.raises(FailedPrecondition, match="deployment 'eta-prod'"):
        models.delete_version("eta", 2)
    plane.deployments.serving.clear()
    models.delete_version("eta", 2)
    assert dict(models.get_model("eta").aliases) == {}  # the alias went with its version
    assert models.register_version("eta", artifact).version == 3
    with pytest.raises(FailedPrecondition, match="still has 2 version"):
        models.delete_model("eta")
    models.delete_version("eta", 1)
    models.delete_version("eta", 3)
    models.delete_model("eta")
    assert models.list_models() == []


def test_listing_pages_and_filters(models: ModelRegistryClient, artifact: Path) -> None:
    for name in ("b-model", "a-model", "c-other"):
        models.create_model(name, tags={"team": "eta" if name != "c-other" else "ops"})
    page, token = models.list_models_page(page_size=2)
    assert [m.name for m in page] == ["a-model", "b-model"] and token
    page, token = models.list_models_page(page_size=2, page_token=token)
    assert ([m.name for m in page], token) == (["c-other"], "")
    # A token was taken as a name to list after: a garbage one silently gave a short or empty page.
    _, token = models.list_models_page(page_size=1)
    for bad, message in [("zzz", "malformed"), (token, "different name prefix or tags")]:
        with pytest.raises(InvalidArgument, match=message):
            models.list_models_page(name_prefix="" if bad == "zzz" else "c-", page_size=1, page_token=bad)
    assert [m.name for m in models.list_models(tags={"team": "eta"})] == ["a-model", "b-model"]
    assert [m.name for m in models.list_models(name_prefix="c-")] == ["c-other"]
    for _ in range(5):
        models.register_version("a-model", artifact)
    versions, token = models.list_versions_page("a-model", page_size=3)
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.version for v in models.list_versions_page("a-model", page_token=token)[0]] == [4, 5]


def test_a_version_page_token_is_good_only_for_its_model_and_status_filter(
    models: ModelRegistryClient, artifact: Path
) -> None:
    """The token was the bare number of the page's last version: one from model ``a`` given for model
    ``b`` (or with another status filter) silently skipped ``b``'s versions up to that number. It now
    names its model and filter, as a model-list token does, and a bare number (what releases before
    this one gave out) is refused with a word to start again."""
    for name in ("a", "b"):
        for _ in range(4):
            models.register_version(name, artifact)
    models.approve("b", 1, "ok")
    _, token = models.list_versions_page("a", page_size=2)
    with pytest.raises(InvalidArgument, match="page_token belongs to a different model or status filter"):
        models.list_versions_page("b", page_token=token)
    with pytest.raises(InvalidArgument, match="page_token belongs to a different model or status filter"):
        models.list_versions_page("a", status=pb.PENDING_MANUAL_APPROVAL, page_token=token)
    assert [v.version for v in models.list_versions_page("a", page_token=token)[0]] == [3, 4]
    approved, token = models.list_versions_page("b", status=pb.APPROVED, page_size=1)
    assert [v.version for v in approved] == [1] and token == ""
    pending, token = models.list_versions_page("b", status=pb.PENDING_MANUAL_APPROVAL, page_size=2)
    assert [v.version for v in pending] == [2, 3]
    rest, _ = models.list_versions_page("b", status=pb.PENDING_MANUAL_APPROVAL, page_token=token)
    assert [v.version for v in rest] == [4]
    _, models_token = models.list_models_page(page_size=1)
    with pytest.raises(InvalidArgument, match="issued by 'ListRegisteredModels'"):
        models.list_versions_page("a", page_token=models_token)
    with pytest.raises(InvalidArgument, match=r"page_token '2' .* start again from the first page"):
        models.list_versions_page("b", page_token="2")


def test_a_name_prefix_longer_than_any_model_name_is_invalid_argument(models: ModelRegistryClient) -> None:
    """SQLite refuses a LIKE pattern over 50,000 bytes once the table has rows ("LIKE or GLOB pattern
    too complex"): a long prefix came back INTERNAL. It is bounded by a model name's length (128)."""
    longest = "m" * 128
    models.create_model(longest)
    assert [m.name for m in models.list_models(name_prefix=longest)] == [longest]
    for length in (60_000, 129):
        with pytest.raises(InvalidArgument, match=r"name_prefix: .* at most 128 characters"):
            models.list_models_page(name_prefix="m" * length)


def test_a_name_prefix_matches_exactly_on_every_backend(models: ModelRegistryClient) -> None:
    """The prefix was a LIKE pattern, which ignores the case of ASCII letters on SQLite and not on
    PostgreSQL: ``DEMAND`` listed the model ``demand`` on SQLite only. It matches the name's first
    characters exactly on both, with ``_`` and ``%`` standing for themselves."""
    for name in ("demand", "demand_x", "demandax"):
        models.create_model(name)
    assert [m.name for m in models.list_models(name_prefix="DEMAND")] == []
    assert [m.name for m in models.list_models(name_prefix="Demand_")] == []
    assert [m.name for m in models.list_models(name_prefix="demand_")] == ["demand_x"]
    assert [m.name for m in models.list_models(name_prefix="demand%")] == []
    assert [m.name for m in models.list_models(name_prefix="dem")] == ["demand", "demand_x", "demandax"]


def test_every_mutation_is_audited_with_its_actor(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    models.register_version("eta", artifact)
    models.approve("eta", 1, "ok")
    models.set_alias("eta", "champion", 1)
    models.delete_alias("eta", "champion")
    models.register_version("eta", artifact)
    models.set_alias("eta", "staging", 2)
    models.set_alias("eta", "canary", 2)
    models.delete_version("eta", 2)  # its aliases go, each with an entry of its own (none before)
    engine = create_engine(plane.db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT actor, action, object_type, object_id FROM audit_log ORDER BY seq")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("alice", "create", "registered_model", "eta"),
        ("alice", "create", "model_version", "eta/1"),
        ("alice", "approve", "model_version", "eta/1"),
        ("alice", "create", "model_alias", "eta@champion"),
        ("alice", "delete", "model_alias", "eta@champion"),
        ("alice", "create", "model_version", "eta/2"),
        ("alice", "create", "model_alias", "eta@staging"),
        ("alice", "create", "model_alias", "eta@canary"),
        ("alice", "delete", "model_alias", "eta@canary"),
        ("alice", "delete", "model_alias", "eta@staging"),
        ("alice", "delete", "model_version", "eta/2"),
    ]


def test_audit_query_by_model_finds_its_alias_changes(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    """Alias entries are filed as ``<model>@<alias>``: asking for a model's alias changes
    (``aetherctl audit list --object model_alias/eta``) found none while '@' was no id separator."""
    models.register_version("eta", artifact)
    models.register_version("eta-two", artifact)
    models.set_alias("eta", "champion", 1)
    models.set_alias("eta", "canary", 1)
    models.delete_alias("eta", "canary")
    models.set_alias("eta-two", "champion", 1)  # another model whose name starts with "eta"
    engine = create_db_engine(plane.db_url)
    try:
        with read_session(create_session_factory(engine)) as session:
            by_model = query_page(session, AuditFilter("model_alias", "eta")).entries
            exact = query_page(session, AuditFilter("model_alias", "eta@champion")).entries
    finally:
        engine.dispose()
    assert [(e.action, e.object_id) for e in by_model] == [
        ("create", "eta@champion"),
        ("create", "eta@canary"),
        ("delete", "eta@canary"),
    ]
    assert [(e.action, e.object_id) for e in exact] == [("create", "eta@champion")]


def test_out_of_range_versions_and_page_tokens_are_invalid_arguments(
    models: ModelRegistryClient, artifact: Path, rider_stats: str
) -> None:
    """Versions are 32-bit columns: PostgreSQL answered a larger number with "integer out of range"
    (INTERNAL), and a page token too big for a 64-bit integer failed on both backends."""
    models.register_version("eta", artifact)
    too_big = 2**31
    calls: list[Callable[[], object]] = [
        lambda: models.get_version("eta", too_big),
        lambda: models.approve("eta", too_big),
        lambda: models.delete_version("eta", too_big),
        lambda: models.lineage("eta", too_big),
        lambda: models.check_deployable("eta", too_big),
        lambda: models.set_alias("eta", "champion", too_big),
    ]
    for call in calls:
        with pytest.raises(
            InvalidArgument, match=f"version: a model version is a number from 1 to {too_big - 1}"
        ):
            call()
    with pytest.raises(InvalidArgument, match="a feature view version is a number from 1 to"):
        models.usages("rider_stats", too_big)
    with pytest.raises(InvalidArgument, match="the feature view version in 'rider_stats@2147483648:trips'"):
        models.register_version("eta", artifact, feature_refs=[f"rider_stats@{too_big}:trips"])
    with pytest.raises(InvalidArgument, match="view@version:feature"):
        models.register_version("eta", artifact, feature_refs=["rider_stats@99999999999999999999:trips"])
    for token in ("99999999999999999999", "²", "-1", " 1", "1e3"):
        with pytest.raises(
            InvalidArgument, match=r"page_token .* is malformed: not a token this server gave out"
        ):
            models.list_versions_page("eta", page_token=token)
    unspecified = pb.APPROVAL_STATUS_UNSPECIFIED
    for forged in (too_big, -1, 2**63 - 1):
        with pytest.raises(InvalidArgument, match=f"is malformed: its position {forged} is not from 0 to"):
            models.list_versions_page("eta", page_token=version_token("eta", unspecified, forged))
    assert models.get_version("eta", 1).version == 1
    last_token = version_token("eta", unspecified, too_big - 1)
    assert [v.version for v in models.list_versions_page("eta", page_token=last_token)[0]] == []


def test_malformed_arguments_are_invalid_arguments_naming_their_field(
    models: ModelRegistryClient, artifact: Path
) -> None:
    """A malformed artifact hash was refused as "artifact hash must be 64 lowercase hex digits", naming
    no field of CreateModelVersion, and GetModelVersion with both a version and an alias as "give a
    version or an alias, not both", naming neither field nor what was given."""
    models.register_version("eta", artifact)
    for bad in ("ABC", "A" * 64, "g" * 64, "a" * 63):
        with pytest.raises(InvalidArgument, match=rf"^artifact_sha256: {bad!r} is not a sha256"):
            models.register_version("eta", artifact_sha256=bad)
    with pytest.raises(InvalidArgument, match=r"^version, alias: .*\(got version 1 and alias 'champion'\)"):
        models.get_version("eta", 1, alias="champion")
    assert [v.version for v in models.list_versions("eta")] == [1]


def test_mistyped_sdk_arguments_are_refused_naming_them_before_the_artifact_is_uploaded(
    models: ModelRegistryClient, artifact: Path
) -> None:
    """``register_version(hyperparameters={"lr": 0.1})`` (a number, as the tracking SDK's parameters take)
    uploaded the artifact and then failed with protobuf's bare TypeError "bad argument type for built-in
    operation", naming neither the argument nor the key; a metric given as text did the same."""
    sha256 = hashlib.sha256(artifact.read_bytes()).hexdigest()
    with pytest.raises(InvalidArgument, match=r"^hyperparameters\['lr'\]: 0\.1 is not a string"):
        models.register_version("eta", artifact, hyperparameters={"depth": "6", "lr": 0.1})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match=r"^metrics\['acc'\]: 'high' is not a finite number"):
        models.register_version("eta", artifact, metrics={"acc": "high"})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match=r"^metrics\['rmse'\]: nan is not a finite number"):
        models.register_version("eta", artifact, metrics={"rmse": float("nan")})
    with pytest.raises(NotFound):  # refused before the upload: nothing was stored
        models.artifacts.stat(sha256)
    assert models.list_models() == []
    # What protobuf takes as it is still goes through: a whole number is a metric.
    version = models.register_version("eta", artifact, hyperparameters={"lr": "0.1"}, metrics={"epochs": 3})
    assert (dict(version.hyperparameters), dict(version.metrics)) == ({"lr": "0.1"}, {"epochs": 3.0})


def test_a_model_registered_again_after_its_delete_continues_its_numbers(
    models: ModelRegistryClient, artifact: Path
) -> None:
    """Deleting a model and registering its name again gave out version 1 again: its audit entries
    ("who approved v1"), approvals and the data planes that had loaded v1 then named another artifact."""
    sha256 = models.artifacts.upload_file(artifact).sha256
    for _ in range(2):
        models.register_version("eta", artifact_sha256=sha256)
    models.delete_version("eta", 1)
    models.delete_version("eta", 2)
    models.delete_model("eta")
    assert models.register_version("eta", artifact_sha256=sha256).version == 3
    assert [v.version for v in models.list_versions("eta")] == [3]


def test_the_latest_version_is_the_newest_that_exists(models: ModelRegistryClient, artifact: Path) -> None:
    """After the newest version's delete, the model's latest_version (aetherctl's LATEST) still named it,
    while get_version without a number (the latest) returned the one before."""
    sha256 = models.artifacts.upload_file(artifact).sha256
    assert models.create_model("eta").latest_version == 0
    for _ in range(2):
        models.register_version("eta", artifact_sha256=sha256)
    assert models.get_model("eta").latest_version == 2
    models.delete_version("eta", 2)
    assert models.get_model("eta").latest_version == models.get_version("eta").version == 1
    (listed,) = [m for m in models.list_models() if m.name == "eta"]
    assert listed.latest_version == 1
    assert models.register_version("eta", artifact_sha256=sha256).version == 3  # numbers never repeat
    assert models.get_model("eta").latest_version == 3
    # As model_registry.proto says: 0 once none exists, and the next one is not latest_version + 1.
    for version in (1, 3):
        models.delete_version("eta", version)
    assert models.get_model("eta").latest_version == 0
    assert models.register_version("eta", artifact_sha256=sha256).version == 4


def test_version_and_model_pages_are_cut_by_size(
    plane: Plane, models: ModelRegistryClient, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 64 hyperparameters of 6,000 characters are within the registry's rules: a dozen such versions
    # took more than gRPC's 4 MiB in one page of the default 100, and every listing failed for good.
    sha256 = models.artifacts.upload_file(artifact).sha256
    hyperparameters = {f"hp_{index:02d}": "x" * 6000 for index in range(64)}
    for _ in range(12):
        models.register_version("big", artifact_sha256=sha256, hyperparameters=hyperparameters)
    first, token = models.list_versions_page("big")
    assert 0 < len(first) < 12 and token
    assert pb.ListModelVersionsResponse(versions=first).ByteSize() <= pages.MAX_PAGE_BYTES
    assert [v.version for v in models.list_versions("big")] == list(range(1, 13))
    assert run_cli(plane, "models", "versions", "big") == 0
    assert len(capsys.readouterr().out.splitlines()) == 13  # the header and every version

    # Models: 64 tags of 6,000 characters each, within the rules too.
    tags = {f"t{index:02d}": "y" * 6000 for index in range(64)}
    names = [f"wide-{index:02d}" for index in range(12)]
    for name in names:
        models.create_model(name, tags=tags)
    page, token = models.list_models_page(name_prefix="wide-")
    assert 0 < len(page) < 12 and token
    assert [m.name for m in models.list_models(name_prefix="wide-")] == names
