"""Audit log: webhook URLs that entries written before they were redacted still hold are redacted.

A webhook URL is a secret (a Slack webhook's token is its path, a receiver's password its userinfo), and
since ``monitoring/webhooks.py`` every ``monitoring.*`` audit entry holds it as ``redact_webhook`` gives
it: ``scheme://host[:port]/<redacted sha256:HEX12>``. Entries written before still held the whole URL,
which the read-only token reads through ``QueryAudit`` and ``ExportAudit``. This revision rewrites each
``webhook_url`` of those entries' ``before``/``after`` into its redacted form (the same form: a redacted
one is left as it is).

Every entry's hash covers its ``before``/``after`` and the previous hash, so the chain is re-hashed from
the first rewritten entry on (each later entry keeps its fields; only ``prev_hash`` and ``hash`` change)
and the head follows. That is a rewrite of history, which the chain itself then records: one more entry,
``audit.redact`` by ``migration 0026_redact_audit_webhooks``, whose ``after`` names the rewritten
entries and the head (seq and hash) before the rewrite, so that a head hash written down or an export
kept elsewhere is still explained. A log with no such URL is not touched and gets no entry. Downgrading
restores nothing: the URLs are gone (rotate such webhooks anyway: they were readable).

Revision ID: 0026_redact_audit_webhooks
Revises: 0025_byte_ordered_names
Create Date: 2026-12-06
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from control_plane.audit.chain import GENESIS_HASH, entry_hash
from control_plane.monitoring.webhooks import is_redacted, redact_webhook

revision: str = "0026_redact_audit_webhooks"
down_revision: str | None = "0025_byte_ordered_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration 0026_redact_audit_webhooks"
ACTION = "audit.redact"
_PAGE = 1000

_LOG = sa.table(
    "audit_log",
    sa.column("seq", sa.BigInteger),
    sa.column("timestamp_us", sa.BigInteger),
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("object_type", sa.String),
    sa.column("object_id", sa.String),
    sa.column("before", sa.JSON(none_as_null=True)),
    sa.column("after", sa.JSON(none_as_null=True)),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
    sa.column("outcome", sa.String),
)
_HEAD = sa.table(
    "audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.BigInteger), sa.column("hash", sa.String)
)


def redacted_state(state: Any) -> Any:
    """``state`` (an entry's ``before`` or ``after``) with a whole ``webhook_url`` in its redacted form."""
    if not isinstance(state, dict):
        return state
    url = state.get("webhook_url")
    if not isinstance(url, str) or not url or is_redacted(url):
        return state
    return {**state, "webhook_url": redact_webhook(url)}


def upgrade() -> None:
    connection = op.get_bind()
    changes: dict[int, tuple[Any, Any]] = {}
    for row in connection.execute(
        sa.select(_LOG.c.seq, _LOG.c.before, _LOG.c.after).where(_LOG.c.action.like("monitoring.%"))
    ).all():
        before, after = redacted_state(row.before), redacted_state(row.after)
        if (before, after) != (row.before, row.after):
            changes[int(row.seq)] = (before, after)
    if not changes:
        return
    head = connection.execute(sa.select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)).one()
    first = min(changes)
    previous = connection.scalar(sa.select(_LOG.c.hash).where(_LOG.c.seq == first - 1)) or GENESIS_HASH
    seq = first - 1
    while True:  # page by seq: the rows are updated as they are read
        rows = connection.execute(
            sa.select(_LOG).where(_LOG.c.seq > seq).order_by(_LOG.c.seq).limit(_PAGE)
        ).all()
        if not rows:
            break
        for row in rows:
            seq = int(row.seq)
            before, after = changes.get(seq, (row.before, row.after))
            fields = {
                "seq": seq, "timestamp_us": row.timestamp_us, "actor": row.actor, "action": row.action,
                "object_type": row.object_type, "object_id": row.object_id, "before": before,
                "after": after, "prev_hash": previous, "outcome": row.outcome or "",
            }  # fmt: skip
            previous = entry_hash(**fields)
            values: dict[str, Any] = {"prev_hash": fields["prev_hash"], "hash": previous}
            if seq in changes:
                values.update(before=before, after=after)
            connection.execute(sa.update(_LOG).where(_LOG.c.seq == seq).values(**values))
    note = {
        "why": "webhook URLs are secrets: entries written before they were redacted held them whole",
        "redacted_seqs": sorted(changes),
        "rehashed_from_seq": first,
        "previous_head": {"seq": int(head.seq), "hash": str(head.hash)},
    }
    fields = {
        "seq": seq + 1, "timestamp_us": time.time_ns() // 1000, "actor": ACTOR, "action": ACTION,
        "object_type": "audit", "object_id": "webhook_url", "before": None, "after": note,
        "prev_hash": previous, "outcome": "",
    }  # fmt: skip
    digest = entry_hash(**fields)
    connection.execute(sa.insert(_LOG).values(**fields, hash=digest))
    connection.execute(sa.update(_HEAD).where(_HEAD.c.id == 1).values(seq=seq + 1, hash=digest))


def downgrade() -> None:
    """Nothing to undo: the whole URLs are not kept anywhere (the entries verify as they now are)."""
