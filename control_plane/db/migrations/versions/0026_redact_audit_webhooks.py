"""Audit log: webhook URLs that entries written before they were redacted still hold are redacted.

A webhook URL is a secret (a Slack webhook's token is its path, a receiver's password its userinfo), and
since ``monitoring/webhooks.py`` every ``monitoring.*`` audit entry holds it as ``redact_webhook`` gives
it: ``scheme://host[:port]/<redacted sha256:HEX12>``. Entries written before still held the whole URL,
which the read-only token reads through ``QueryAudit`` and ``ExportAudit``. This revision rewrites each
``webhook_url`` of those entries' ``before``/``after`` into its redacted form (the same form: a redacted
one is left as it is).

Every entry's hash covers its ``before``/``after`` and the previous hash, so a rewrite must re-hash the
chain from the first rewritten entry on, and re-hashing makes whatever the later entries hold verify.
So the chain is verified first (as ``aetherctl audit verify`` does: a row whose ``before``/``after``
is not JSON is damaged, not fatal):

* intact: the chain is re-hashed from the first rewritten entry on (each later entry keeps its fields;
  only ``prev_hash`` and ``hash`` change) and the head follows. It still verifies, and it was intact
  before, so nothing that had been tampered with is laundered;
* already broken at seq N: nothing is re-hashed. The URLs are redacted in place (those entries then fail
  verification too, as everything from N on already did), and the chain stays broken wherever it broke
  (the head is moved to the new entry below, whose ``prev_hash`` is the head as recorded before, so
  a break of the head itself, a replaced or removed newest entry, is not mended either).

Either way the rewrite is recorded in the chain: one more entry, ``audit.redact`` by ``migration
0026_redact_audit_webhooks``, whose ``after`` names the rewritten entries, the head (seq and hash)
before the rewrite, whether the chain was re-hashed, and for a broken chain where and why it was
already broken, so that a head hash written down or an export kept elsewhere is still explained. A
``monitoring.*`` entry whose ``before`` or ``after`` does not parse is left as it is and named
(``unreadable_seqs``): a damaged row never stops the upgrade, and so never the control plane's start.
A log with no such URL and no such row is not touched and gets no entry. Downgrading restores nothing:
the URLs are gone (rotate such webhooks anyway: they were readable).

What the migration runs is frozen here, copied from the runtime code of its day (the chain's hash and
verification from ``control_plane.audit``, ``redact_webhook``/``is_redacted`` from
``control_plane.monitoring.webhooks`` and ``clients.uris``): a later change there must not change what
this revision does to a database that upgrades through it.

Revision ID: 0026_redact_audit_webhooks
Revises: 0025_byte_ordered_names
Create Date: 2026-12-06
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import op

revision: str = "0026_redact_audit_webhooks"
down_revision: str | None = "0025_byte_ordered_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration 0026_redact_audit_webhooks"
ACTION = "audit.redact"
_PAGE = 1000
GENESIS_HASH = "0" * 64

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
# before/after as their stored text (through sa.JSON one row that is not JSON raised for the whole read).
_ROWS = sa.select(
    _LOG.c.seq, _LOG.c.timestamp_us, _LOG.c.actor, _LOG.c.action, _LOG.c.object_type, _LOG.c.object_id,
    sa.cast(_LOG.c.before, sa.Text).label("before"), sa.cast(_LOG.c.after, sa.Text).label("after"),
    _LOG.c.prev_hash, _LOG.c.hash, _LOG.c.outcome,
)  # fmt: skip


# Frozen: control_plane.monitoring.webhooks (redact_webhook, is_redacted) and clients.uris (the authority).

_MARKER = re.compile(r"<redacted sha256:[0-9a-f]{12}>\Z")


def is_redacted(url: str) -> bool:
    return _MARKER.search(url) is not None


def redact_webhook(url: str) -> str:
    """``scheme://host[:port]/<redacted sha256:HEX12>`` (the user name kept under abfs/abfss only)."""
    if not url:
        return ""
    marker = f"<redacted sha256:{hashlib.sha256(url.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}>"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return marker
    userinfo, host = _authority(scheme, rest)
    user = userinfo.partition(":")[0] if userinfo and scheme.lower() in ("abfs", "abfss") else ""
    return f"{scheme}://{user + '@' if user else ''}{host}/{marker}"


def _cut(rest: str, marks: str) -> int:
    return min([len(rest)] + [found for found in (rest.find(mark) for mark in marks) if found != -1])


def _authority(scheme: str, rest: str) -> tuple[str, str]:
    """(userinfo, host) of what follows ``scheme://``, a password with a raw ``/``, ``?`` or ``#`` read
    as ``clients.uris._split`` read it."""
    authority = rest[: _cut(rest, "/?#")]
    userinfo, at, host = authority.rpartition("@")
    if at:
        return userinfo, host
    raw: int | None = None
    if ":" in authority:
        if scheme.lower() in ("s3", "gs", "gcs"):
            raw = rest.rfind("@", 0, _cut(rest, "?#"))
        else:
            name, _, port = authority.rpartition(":")
            if scheme.lower() in ("redis", "rediss") or not (name and (port.isdigit() or not port)):
                raw = rest.rfind("@")
    if raw is None or raw == -1:
        return "", authority
    tail = rest[raw + 1 :]
    return rest[:raw], tail[: _cut(tail, "/?#")]


def redacted_state(state: Any) -> Any:
    """``state`` (an entry's ``before`` or ``after``) with a whole ``webhook_url`` in its redacted form."""
    if not isinstance(state, dict):
        return state
    url = state.get("webhook_url")
    if not isinstance(url, str) or not url or is_redacted(url):
        return state
    return {**state, "webhook_url": redact_webhook(url)}


# Frozen: control_plane.audit.chain (entry_hash) and control_plane.audit.query (decoding a stored value).


def entry_hash(**fields: Any) -> str:
    """sha256 of the entry's canonical JSON; an empty ``outcome`` is left out of the hashed fields."""
    if not fields.get("outcome"):
        fields.pop("outcome", None)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decoded(stored: str | None) -> tuple[Any, bool]:
    """(value, True) for a stored JSON text (None for NULL); (None, False) when it does not parse."""
    if stored is None:
        return None, True
    try:
        return json.loads(stored, parse_constant=_no_constant), True
    except (ValueError, RecursionError):
        return None, False


class _Entry(NamedTuple):  # not a dataclass: alembic loads this module outside sys.modules
    seq: int
    fields: dict[str, Any]  # what the hash covers, prev_hash included
    hash: str
    readable: bool

    def expected_hash(self) -> str:
        return entry_hash(**self.fields)


def _entries(connection: sa.Connection, after_seq: int = 0) -> Iterator[_Entry]:
    """Every entry after ``after_seq`` in seq order, a page at a time (read before it is written)."""
    while True:
        rows = connection.execute(_ROWS.where(_LOG.c.seq > after_seq).order_by(_LOG.c.seq).limit(_PAGE)).all()
        for row in rows:
            before, before_ok = decoded(row.before)
            after, after_ok = decoded(row.after)
            fields = {
                "seq": int(row.seq), "timestamp_us": row.timestamp_us, "actor": row.actor,
                "action": row.action, "object_type": row.object_type, "object_id": row.object_id,
                "before": before, "after": after, "prev_hash": row.prev_hash, "outcome": row.outcome or "",
            }  # fmt: skip
            yield _Entry(int(row.seq), fields, str(row.hash), before_ok and after_ok)
        if len(rows) < _PAGE:
            return
        after_seq = int(rows[-1].seq)


# Frozen: control_plane.audit.verify (where the chain first breaks, and why).


def first_break(connection: sa.Connection, head_seq: int, head_hash: str) -> tuple[int, str] | None:
    """(seq, reason) of the first break of the chain, or None when it verifies."""
    expected, previous = 1, GENESIS_HASH
    for entry in _entries(connection):
        if entry.seq != expected:
            if entry.seq > expected:
                return expected, f"entry {expected} is missing (next entry is {entry.seq})"
            return entry.seq, f"entry {entry.seq} is out of sequence (expected {expected})"
        if entry.seq > head_seq:
            return entry.seq, f"entry {entry.seq} lies beyond the recorded head {head_seq}"
        if entry.fields["prev_hash"] != previous:
            return entry.seq, f"entry {entry.seq} does not link to entry {entry.seq - 1} (prev_hash differs)"
        if not entry.readable:
            return entry.seq, f"entry {entry.seq} was modified (its before/after is not valid JSON)"
        if entry.hash != entry.expected_hash():
            return entry.seq, f"entry {entry.seq} was modified (its hash does not match its contents)"
        previous = entry.hash
        expected += 1
    if expected - 1 != head_seq:
        return expected, f"entries {expected}..{head_seq} are missing (the head names entry {head_seq})"
    if previous != head_hash:
        if head_seq == 0:
            return 1, "the head row of an empty log was altered"
        return head_seq, f"entry {head_seq} differs from the recorded head hash (it was replaced)"
    return None


def upgrade() -> None:
    connection = op.get_bind()
    changes: dict[int, tuple[Any, Any]] = {}
    unreadable: list[int] = []
    for row in connection.execute(_ROWS.where(_LOG.c.action.like("monitoring.%"))).all():
        (before, before_ok), (after, after_ok) = decoded(row.before), decoded(row.after)
        if not (before_ok and after_ok):
            unreadable.append(int(row.seq))  # left as it is: a damaged row must not stop the upgrade
            continue
        redacted = redacted_state(before), redacted_state(after)
        if redacted != (before, after):
            changes[int(row.seq)] = redacted
    if not changes and not unreadable:
        return
    head = connection.execute(sa.select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)).one_or_none()
    head_seq, head_hash = (0, GENESIS_HASH) if head is None else (int(head.seq), str(head.hash))
    broken = first_break(connection, head_seq, head_hash)
    note: dict[str, Any] = {
        "why": "webhook URLs are secrets: entries written before they were redacted held them whole",
        "redacted_seqs": sorted(changes),
        "previous_head": {"seq": head_seq, "hash": head_hash},
    }
    if unreadable:
        note["unreadable_seqs"] = sorted(unreadable)
        note["unreadable"] = "before/after is not valid JSON: left as it is, any webhook URL in it too"
    if broken is None:
        last_seq, last_hash = _rehash(connection, changes) if changes else (head_seq, head_hash)
        if changes:
            note["rehashed_from_seq"] = min(changes)
    else:
        for seq, (before, after) in sorted(changes.items()):
            connection.execute(sa.update(_LOG).where(_LOG.c.seq == seq).values(before=before, after=after))
        note["already_broken"] = {"seq": broken[0], "reason": broken[1]}
        note["rehashed"] = "no: the chain did not verify before this migration, and re-hashing would have"
        note["rehashed"] += " made it verify; the redacted entries no longer match their hashes"
        # After the last stored entry, linked to the head as recorded: a break stays a break.
        last_seq = int(connection.scalar(sa.select(sa.func.max(_LOG.c.seq))) or 0)
        last_hash = head_hash
    fields = {
        "seq": last_seq + 1, "timestamp_us": time.time_ns() // 1000, "actor": ACTOR, "action": ACTION,
        "object_type": "audit", "object_id": "webhook_url", "before": None, "after": note,
        "prev_hash": last_hash, "outcome": "",
    }  # fmt: skip
    digest = entry_hash(**fields)
    connection.execute(sa.insert(_LOG).values(**fields, hash=digest))
    if head is None:
        connection.execute(sa.insert(_HEAD).values(id=1, seq=last_seq + 1, hash=digest))
    else:
        connection.execute(sa.update(_HEAD).where(_HEAD.c.id == 1).values(seq=last_seq + 1, hash=digest))


def _rehash(connection: sa.Connection, changes: dict[int, tuple[Any, Any]]) -> tuple[int, str]:
    """Rewrites ``changes`` and re-hashes the (verified) chain from the first of them on; returns the
    last entry's (seq, hash). Pages are read whole before their rows are updated."""
    first = min(changes)
    previous = connection.scalar(sa.select(_LOG.c.hash).where(_LOG.c.seq == first - 1)) or GENESIS_HASH
    seq = first - 1
    for entry in _entries(connection, first - 1):
        seq = entry.seq
        before, after = changes.get(seq, (entry.fields["before"], entry.fields["after"]))
        values: dict[str, Any] = {"prev_hash": previous}
        previous = entry_hash(**{**entry.fields, "before": before, "after": after, "prev_hash": previous})
        values["hash"] = previous
        if seq in changes:
            values.update(before=before, after=after)
        connection.execute(sa.update(_LOG).where(_LOG.c.seq == seq).values(**values))
    return seq, str(previous)


def downgrade() -> None:
    """Nothing to undo: the whole URLs are not kept anywhere (a chain that was intact verifies as it is)."""
