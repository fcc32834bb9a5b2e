"""Synchronous client of the control plane's audit log (``aether.v1.Audit``): query a page, walk every
matching entry, verify the chain, export JSON lines. Honours ``AETHER_TOKEN`` and ``AETHER_TLS_CA``
(see :mod:`clients.sdk.auth`). Failed calls raise :mod:`clients.errors` exceptions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clients.aether.v1 import audit_pb2 as pb
from clients.aether.v1 import audit_pb2_grpc as pb_grpc
from clients.files import replace_when_done
from clients.sdk.arguments import checked_request
from clients.sdk.service_client import ServiceClient


def audit_filter(
    object_type: str | None = None,
    object_id: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    refused: bool | None = None,
) -> pb.AuditFilter:
    """``refused``: True for refused operations only, False for those carried out only, None for both."""
    # None leaves since_us, until_us and refused unset (they are optional: 0 and False are values).
    return checked_request(
        pb.AuditFilter,
        object_type=object_type or "",
        object_id=object_id or "",
        since_us=since_us,
        until_us=until_us,
        refused=refused,
    )


def entry_json(entry: pb.AuditEntry) -> dict[str, Any]:
    """An entry as the JSON object of the export format: ``before``/``after`` as JSON values (null when
    absent), every other field as stored (``outcome`` only for a refused operation), so the hash can be
    recomputed from the line alone. A row the
    server could not decode (altered outside the control plane) carries ``"damaged"``: what is wrong."""
    fields: dict[str, Any] = {
        "seq": entry.seq,
        "timestamp_us": entry.timestamp_us,
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "before": json.loads(entry.before_json) if entry.HasField("before_json") else None,
        "after": json.loads(entry.after_json) if entry.HasField("after_json") else None,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
    if entry.outcome:  # only when not empty, as in the hash
        fields["outcome"] = entry.outcome
    if entry.damaged:
        fields["damaged"] = entry.damaged
    return fields


def entry_line(entry: pb.AuditEntry) -> str:
    """One JSON line (sorted keys, no spaces: the canonical form the server hashes)."""
    return json.dumps(entry_json(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AuditClient(ServiceClient):
    def _open_stubs(self) -> None:
        self._stub = pb_grpc.AuditStub(self._channel)  # type: ignore[no-untyped-call]

    def query(
        self, where: pb.AuditFilter | None = None, *, page_size: int = 0, page_token: str = ""
    ) -> pb.QueryAuditResponse:
        request = checked_request(
            pb.QueryAuditRequest, filter=where, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.QueryAudit, request, pb.QueryAuditResponse)

    def entries(self, where: pb.AuditFilter | None = None, *, page_size: int = 0) -> Iterator[pb.AuditEntry]:
        """Every matching entry, oldest first, a page per call."""
        token = ""
        while True:
            page = self.query(where, page_size=page_size, page_token=token)
            yield from page.entries
            if not page.next_page_token:
                return
            token = page.next_page_token

    def verify(self) -> pb.VerifyAuditResponse:
        return self._call(self._stub.VerifyAudit, pb.VerifyAuditRequest(), pb.VerifyAuditResponse)

    def export(self, where: pb.AuditFilter | None = None) -> Iterator[pb.AuditEntry]:
        """Every matching entry over one stream (no per-message deadline: an export may be long)."""
        for chunk in self._stream(self._stub.ExportAudit, pb.ExportAuditRequest(filter=where), None):
            yield from chunk.entries

    def export_jsonl(self, path: Path, where: pb.AuditFilter | None = None) -> int:
        """Writes the export to ``path`` (replacing it only once complete) and returns the entry count."""
        count = 0
        with replace_when_done(Path(path)) as out:
            for entry in self.export(where):
                out.write(entry_line(entry).encode("utf-8") + b"\n")
                count += 1
        return count
