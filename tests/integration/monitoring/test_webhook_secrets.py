"""A monitor's webhook URL is a secret (a Slack webhook's path token, a receiver's ``user:password@``):
through a real control plane with auth on, the read-only token reads neither through GetMonitorConfig
nor through QueryAudit, and no reply shows it, the admin's included (the URL is write-only). A config
edited by ``aetherctl monitor configure`` (which reads the config, redacted, and sends it back with the
flags applied) keeps the real URL: the monitor's own degradation alert still reaches it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from clients.errors import InvalidArgument
from clients.sdk.audit import AuditClient
from clients.sdk.auth import ChannelSecurity
from clients.sdk.monitoring import MonitoringClient
from control_plane.api.audit import add_to_server as audit_service
from control_plane.api.auth import AuthSettings
from control_plane.cli import monitor_config
from control_plane.monitoring import config as configs
from tests.integration.monitoring.conftest import Plane, Webhook, eventually, open_plane, record
from tests.support.ports import refused_address

ADMIN_TOKEN = "admin-secret-0123456789"
READONLY_TOKEN = "reader-secret-9876543210"
PASSWORD = "HOOK-PASSWORD-123"
TOKEN_PATH = "/services/T0/B0/SLACKTOKENxyz"
SECOND = 1_000_000


@pytest.fixture
async def secured(tmp_path: Path, db_url: str, redis_url: str) -> AsyncIterator[Plane]:
    auth = AuthSettings(admin_token=ADMIN_TOKEN, readonly_token=READONLY_TOKEN)
    async with open_plane(tmp_path, db_url, redis_url, auth=auth, more=[audit_service]) as plane:
        yield plane


def monitoring(plane: Plane, token: str) -> MonitoringClient:
    return MonitoringClient(plane.server.address, security=ChannelSecurity(token=token), timeout=20)


def redacted(url: str, origin: str) -> str:
    """The documented redacted form: scheme://host:port/ and the first 12 hex digits of the URL's sha256."""
    return f"{origin}/<redacted sha256:{hashlib.sha256(url.encode()).hexdigest()[:12]}>"


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, "SLACKTOKENxyz", "T0/B0", "alerts:"):
        assert secret not in text


async def test_read_only_callers_see_the_webhook_only_redacted_in_configs_and_audit(secured: Plane) -> None:
    address = refused_address()  # nothing listens there: a POST is refused
    url = f"http://alerts:{PASSWORD}@{address}{TOKEN_PATH}"
    shown = redacted(url, f"http://{address}")
    secured.deploy("churn")

    def calls() -> None:
        with monitoring(secured, ADMIN_TOKEN) as admin, monitoring(secured, READONLY_TOKEN) as reader:
            reply = admin.configure("churn", webhook_url=url, window_rows=500)
            assert reply.webhook_url == shown  # not even echoed to the admin: it is write-only
            assert reader.get_config("churn").webhook_url == shown
            assert admin.get_config("churn").webhook_url == shown
            # A second replacement: its audit entry has the URL in "before" and "after".
            admin.configure("churn", webhook_url=url, window_rows=600)
        with AuditClient(
            secured.server.address, security=ChannelSecurity(token=READONLY_TOKEN), timeout=20
        ) as audit:
            entries = [e for e in audit.entries() if e.action == "monitoring.configure"]
        assert len(entries) == 2
        assert_no_secret(str(entries))
        assert json.loads(entries[0].after_json)["webhook_url"] == shown
        assert json.loads(entries[1].before_json)["webhook_url"] == shown

    await asyncio.to_thread(calls)
    # What the monitor posts to is still the whole URL.
    stored = await asyncio.to_thread(configs.get_config, secured.server.context.sessions, "churn")
    assert stored.webhook_url == url and stored.window_rows == 600


def cli(plane: Plane, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.add_argument("--control-plane", default=plane.server.address)
    parser.add_argument("--timeout", type=float, default=20.0)
    monitor_config.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.handler(args)
    return code, out.getvalue()


async def test_a_config_edited_by_the_cli_keeps_its_webhook_and_the_alert_reaches_it(
    secured: Plane, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{webhook.origin}{TOKEN_PATH}"
    secured.deploy("churn")
    secured.deploy("other")
    monkeypatch.setenv("AETHER_TOKEN", ADMIN_TOKEN)  # the CLI's token
    with monitoring(secured, ADMIN_TOKEN) as admin:
        await asyncio.to_thread(admin.configure, "churn", webhook_url=url)
        # Another URL's redacted form would be stored as a URL that reaches no one: refused.
        other = redacted(f"{webhook.origin}/services/T9/B9/OTHER", webhook.origin)
        with pytest.raises(InvalidArgument, match="redacted"):
            await asyncio.to_thread(admin.configure, "churn", webhook_url=other)
        # ...and so is this deployment's redacted URL sent for a deployment without it.
        with pytest.raises(InvalidArgument, match="redacted"):
            await asyncio.to_thread(admin.configure, "other", webhook_url=redacted(url, webhook.origin))

    # Read (redacted), the flags applied, sent back whole: the webhook is kept.
    code, text = await asyncio.to_thread(
        cli, secured, "monitor", "configure", "churn", "--task", "classification",
        "--performance-window-seconds", "10", "--min-labels", "20", "--alert-threshold", "0.8", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(text)["webhook_url"] == redacted(url, webhook.origin)
    code, text = await asyncio.to_thread(cli, secured, "monitor", "show", "churn")
    assert code == 0
    assert_no_secret(text)

    # Every prediction wrong: the window degrades and the monitor alerts the stored, whole URL.
    base = (time.time_ns() // 1000 // (10 * SECOND) - 3) * 10 * SECOND
    ids = [f"r-{i}" for i in range(40)]
    await secured.log(
        [
            record(rid, np.zeros((1, 3)), {"probabilities": np.array([[0.9, 0.1]], dtype=np.float32)}, ts)
            for rid, ts in zip(ids, [base + i * SECOND // 4 for i in range(40)], strict=True)
        ]
    )
    with monitoring(secured, ADMIN_TOKEN) as admin:

        async def indexed() -> bool:
            answer = await asyncio.to_thread(
                admin.performance, "churn", since_us=base, until_us=base + 20 * SECOND
            )
            return sum(w.n_predictions for w in answer.windows) == 40

        await eventually(indexed)
        await asyncio.to_thread(admin.record_feedback, [(rid, 1.0) for rid in ids])

    async def alerted() -> bool:
        return bool(webhook.of_kind("performance_degradation"))

    await eventually(alerted)
    assert webhook.paths[0] == TOKEN_PATH
