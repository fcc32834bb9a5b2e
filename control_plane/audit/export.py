"""Exporting the audit log as JSON lines: one entry per line, oldest first, with its hashes, so the file
can be archived and compared with the live chain later."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO

from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit.chain import AuditEntry, canonical_json
from control_plane.audit.query import AuditFilter, iter_entries


def entry_line(entry: AuditEntry) -> str:
    """One entry as a JSON line (canonical form, no trailing newline)."""
    return canonical_json(entry.to_json())


def export_lines(sessions: sessionmaker[Session], where: AuditFilter | None = None) -> Iterator[str]:
    for entry in iter_entries(sessions, where or AuditFilter()):
        yield entry_line(entry)


def write_jsonl(lines: Iterable[str], out: IO[str]) -> int:
    """Writes ``lines`` one per line and returns how many."""
    count = 0
    for line in lines:
        out.write(line)
        out.write("\n")
        count += 1
    return count


def entry_from_line(line: str) -> AuditEntry:
    data = json.loads(line)
    fields = {key: data[key] for key in AuditEntry.__dataclass_fields__ if key not in ("damaged", "outcome")}
    # A line has an outcome only when the entry does (and none before refusals were logged).
    return AuditEntry(**fields, outcome=str(data.get("outcome", "")), damaged=str(data.get("damaged", "")))
