"""A webhook URL's secret (its path token, its ``user:password@``) stays out of logs and audit entries: a
real POST that fails (a closed port, a URL urllib cannot post to) is logged with the redacted URL only;
the stored config keeps the whole URL, and its redacted form sent back means "keep it"."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.audit.tables import AuditEntryRow
from control_plane.monitoring import config as configs
from control_plane.monitoring.alerts import Alerter
from control_plane.monitoring.tables import MonitorConfigRow
from tests.support.ports import refused_address

PASSWORD = "HOOK-PASSWORD-123"
TOKEN = "SLACKTOKENxyz"


def redacted(url: str, origin: str) -> str:
    """The documented form: scheme://host[:port]/ and the first 12 hex digits of the URL's sha256."""
    return f"{origin}/<redacted sha256:{hashlib.sha256(url.encode()).hexdigest()[:12]}>"


@pytest.mark.parametrize(
    "url",
    [
        # Connection refused, then the userinfo left on the host (urllib does not take it as credentials).
        "http://{address}/services/T0/B0/" + TOKEN,
        f"http://alerts:{PASSWORD}@{{address}}/services/T0/B0/{TOKEN}",
        # urllib refuses these before connecting, quoting the piece it could not read (InvalidURL).
        f"http://{{address}}/services/T0/B0/{TOKEN} x",
        f"http://alerts:{PASSWORD}/x@{{address}}/services/T0/B0/{TOKEN}",
    ],
)
async def test_a_failing_webhook_is_logged_without_its_secret(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    address = refused_address()  # nothing listens there: a POST is refused
    url = url.format(address=address)
    alerter = Alerter(timeout_s=5)
    with caplog.at_level(logging.DEBUG):
        assert not await alerter.alert({"kind": "data_drift", "message": "drift"}, url)
    assert alerter.failed == 1
    (line,) = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert "failed" in line and "<redacted sha256:" in line
    for secret in (TOKEN, PASSWORD, "T0/B0", "alerts:"):
        assert secret not in caplog.text
    assert redacted(url, f"http://{address}") in line


def _audited(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        rows = session.execute(select(AuditEntryRow).order_by(AuditEntryRow.seq)).scalars().all()
        return [json.dumps([row.before, row.after]) for row in rows if row.action == "monitoring.configure"]


def test_the_redacted_form_sent_back_keeps_the_stored_url_and_another_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    url = f"https://alerts:{PASSWORD}@hooks.example.com:8443/services/T0/B0/{TOKEN}?x=1"
    shown = redacted(url, "https://hooks.example.com:8443")
    put = configs.put_config(sessions, pb.MonitorConfig(deployment="churn", webhook_url=url), actor="admin")
    assert put.webhook_url == url and configs.shown(put).webhook_url == shown

    # Sent back as read with another field changed: the URL stays the whole one.
    configs.put_config(
        sessions, pb.MonitorConfig(deployment="churn", webhook_url=shown, min_samples=40), actor="admin"
    )
    stored = configs.get_config(sessions, "churn")
    assert (stored.webhook_url, stored.min_samples) == (url, 40)

    # Another URL's redacted form, or a redacted form where nothing is stored: refused, nothing written.
    other = redacted("https://hooks.example.com:8443/services/T9", "https://hooks.example.com:8443")
    with pytest.raises(InvalidArgument, match="redacted"):
        configs.put_config(sessions, pb.MonitorConfig(deployment="churn", webhook_url=other), actor="admin")
    with pytest.raises(InvalidArgument, match="redacted"):
        configs.put_config(sessions, pb.MonitorConfig(deployment="new", webhook_url=shown), actor="admin")
    with sessions() as session:
        assert session.get(MonitorConfigRow, "new") is None
    assert configs.get_config(sessions, "churn").webhook_url == url

    # Empty clears it; a new whole URL replaces it.
    configs.put_config(sessions, pb.MonitorConfig(deployment="churn"), actor="admin")
    assert configs.get_config(sessions, "churn").webhook_url == ""
    assert configs.shown(configs.get_config(sessions, "churn")).webhook_url == ""

    audited = _audited(sessions)
    assert len(audited) == 3 and shown in audited[0] and shown in audited[1] and shown in audited[2]
    for secret in (TOKEN, PASSWORD, "T0/B0", "alerts:"):
        assert all(secret not in entry for entry in audited)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://hooks.slack.com/services/T0/B0/SECRET", "https://hooks.slack.com"),
        ("http://u:pa/ss@host:9/x", "http://host:9"),  # a password with a raw '/'
        ("http://[::1]:8080?token=abc#frag", "http://[::1]:8080"),
        ("https://h", "https://h"),
    ],
)
def test_shown_keeps_scheme_host_and_port_and_a_fingerprint_only(url: str, origin: str) -> None:
    config = pb.MonitorConfig(deployment="d", webhook_url=url)
    assert configs.shown(config).webhook_url == redacted(url, origin)
    assert config.webhook_url == url  # a copy: the config itself is untouched
