"""``aetherctl audit list | verify | export`` against a real control plane, through the module's own
parser (``main`` wires the same ``register``). The synchronous CLI runs in a worker thread while the
test's event loop serves."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import audit_pb2, audit_pb2_grpc
from clients.aether.v1 import feature_registry_pb2 as pb
from clients.aether.v1.feature_registry_pb2_grpc import FeatureRegistryStub
from clients.server_handlers import HandlerRegistry
from control_plane.api.audit import AUDIT_SERVICE, AuditServicer, Context
from control_plane.api.context import ServiceContext
from control_plane.cli import audit as audit_cli
from control_plane.db import create_db_engine
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.unit.control_plane.builders import entity, metadata, spec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.add_argument("--control-plane", required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    audit_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


async def _aetherctl(server: ControlPlaneServer, *argv: str) -> int:
    args = _parser().parse_args(["--control-plane", server.address, *argv])
    code: int = await asyncio.to_thread(args.handler, args)
    return code


async def _populate(channel: grpc.aio.Channel) -> None:
    registry = FeatureRegistryStub(channel)  # type: ignore[no-untyped-call]
    who = (("x-aether-actor", "bob"),)
    await registry.CreateEntity(pb.CreateEntityRequest(entity=entity()), metadata=who)
    await registry.CreateFeatureView(
        pb.CreateFeatureViewRequest(spec=spec(), metadata=metadata()), metadata=who
    )
    await registry.DeleteFeatureView(pb.DeleteFeatureViewRequest(name="driver_stats"), metadata=who)


async def test_list_filters_by_object_and_time(
    server: ControlPlaneServer, channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    await _populate(channel)
    assert await _aetherctl(server, "audit", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "OUTCOME"]
    assert [line.split()[-3:] for line in lines[1:]] == [
        ["create", "entity/driver", "ok"],
        ["create", "feature_view/driver_stats", "ok"],
        ["delete", "feature_view/driver_stats", "ok"],
    ]
    assert all(" bob " in line for line in lines[1:])

    assert await _aetherctl(server, "audit", "list", "--object", "feature_view/driver_stats", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["seq"], row["object_type"], row["object_id"]) for row in rows] == [
        (2, "feature_view", "driver_stats"),
        (3, "feature_view", "driver_stats"),
    ]

    assert await _aetherctl(server, "audit", "list", "--since", "2h", "--until", "2999-01-01") == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert await _aetherctl(server, "audit", "list", "--until", "2000-01-01T00:00:00Z") == 0
    assert capsys.readouterr().out.splitlines()[1:] == []
    assert await _aetherctl(server, "audit", "list", "--since", "yesterday-ish") == 2
    assert "invalid time" in capsys.readouterr().err
    # Named in raw microseconds before, without the flags.
    assert await _aetherctl(server, "audit", "list", "--since", "2h", "--until", "3h") == 2
    assert "--until 3h is before --since 2h" in capsys.readouterr().err


async def test_verify_exits_1_naming_the_tampered_row(
    server: ControlPlaneServer, channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    await _populate(channel)
    assert await _aetherctl(server, "audit", "verify") == 0
    assert "audit log intact: 3 entries" in capsys.readouterr().out

    engine = create_db_engine(server.context.settings.db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    finally:
        engine.dispose()
    assert await _aetherctl(server, "audit", "verify") == 1
    assert "TAMPERED at entry 2: entry 2 is missing" in capsys.readouterr().err


async def test_export_writes_json_lines(
    server: ControlPlaneServer, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    await _populate(channel)
    target = tmp_path / "audit.jsonl"
    assert await _aetherctl(server, "audit", "export", str(target)) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(row["seq"], row["action"], row["actor"]) for row in rows] == [
        (1, "create", "bob"),
        (2, "create", "bob"),
        (3, "delete", "bob"),
    ]
    assert rows[0]["before"] is None and rows[0]["after"]["name"] == "driver"
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(rows))
    assert not (tmp_path / "audit.jsonl.partial").exists()


async def test_a_row_with_undecodable_json_is_named_by_verify_and_shown_by_list_and_export(
    server: ControlPlaneServer,
    channel: grpc.aio.Channel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Verify failed INTERNAL on such a row, and list/export could not read any of the log."""
    if not server.context.settings.db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's json type refuses such text, so no one can store it")
    await _populate(channel)
    engine = create_db_engine(server.context.settings.db_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET after = '{\"a\": NaN}' WHERE seq = 2"))
    finally:
        engine.dispose()
    assert await _aetherctl(server, "audit", "verify") == 1
    assert "TAMPERED at entry 2: entry 2 was modified (after is not valid JSON" in capsys.readouterr().err
    assert await _aetherctl(server, "audit", "list") == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 4
    assert "entry 2 is damaged: after is not valid JSON" in captured.err
    target = tmp_path / "audit.jsonl"
    assert await _aetherctl(server, "audit", "export", str(target)) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(row["seq"], "damaged" in row) for row in rows] == [(1, False), (2, True), (3, False)]
    assert rows[1]["after"] is None


class CountingAuditServicer(AuditServicer):
    """The real audit service, keeping each QueryAudit request it answers: each is a page that ``audit
    list`` asked for."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self.queries: list[audit_pb2.QueryAuditRequest] = []

    async def QueryAudit(
        self, request: audit_pb2.QueryAuditRequest, context: Context
    ) -> audit_pb2.QueryAuditResponse:
        self.queries.append(request)
        return await super().QueryAudit(request, context)


@pytest.fixture
async def counted(
    tmp_path: Path, db_url: str
) -> AsyncIterator[tuple[ControlPlaneServer, CountingAuditServicer]]:
    """A control plane whose audit service is a :class:`CountingAuditServicer`."""
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=db_url, listen_addr="127.0.0.1:0", shutdown_grace_s=0.5
    )
    servicers: list[CountingAuditServicer] = []

    def add_counting_audit(server: HandlerRegistry, context: ServiceContext) -> str:
        servicers.append(CountingAuditServicer(context.sessions))
        audit_pb2_grpc.add_AuditServicer_to_server(servicers[0], server)  # type: ignore[no-untyped-call]
        return AUDIT_SERVICE

    handle = await start_server(settings, services=[add_counting_audit])
    yield handle, servicers[0]
    await handle.stop()


@pytest.mark.parametrize("limit", [1, 2])
async def test_list_stops_asking_for_pages_once_it_has_limit_entries(
    counted: tuple[ControlPlaneServer, CountingAuditServicer], capsys: pytest.CaptureFixture[str], limit: int
) -> None:
    """With ``--limit`` entries in hand, list asked for one page more (and threw it away) whenever the
    log held more than ``--limit``: the loop took the next entry before checking the count."""
    server, servicer = counted
    async with grpc.aio.insecure_channel(server.address) as channel:
        await _populate(channel)  # three entries
    assert await _aetherctl(server, "audit", "list", "--limit", str(limit), "--json") == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == list(
        range(1, limit + 1)
    )
    assert [(query.page_size, query.page_token) for query in servicer.queries] == [(limit, "")]


async def test_list_says_on_stderr_when_more_entries_match_than_it_shows(
    counted: tuple[ControlPlaneServer, CountingAuditServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    """list shows the oldest entries first, at most --limit (100 by default): a log past its limit printed
    its oldest 100 entries and nothing more, with no sign that the recent ones had been left out."""
    server, servicer = counted
    async with grpc.aio.insecure_channel(server.address) as channel:
        await _populate(channel)  # three entries
    assert await _aetherctl(server, "audit", "list", "--limit", "2", "--json") == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2]  # stdout stays JSON lines
    assert err == (
        "aetherctl: more entries match: these are the oldest 2 (--limit); raise --limit, or narrow the"
        " selection with --since, --until or --object\n"
    )
    assert [(query.page_size, query.page_token) for query in servicer.queries] == [(2, "")]  # no page more

    for every in (["--limit", "3"], []):
        assert await _aetherctl(server, "audit", "list", *every) == 0
        out, err = capsys.readouterr()
        assert (len(out.splitlines()), err) == (4, "")  # the header and all three
