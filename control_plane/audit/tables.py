"""ORM tables of control_plane.audit (registered on control_plane.db.models.Base).

``audit_log`` holds the hash-chained entries (changes made, and model operations refused);
``audit_head`` holds one row with the sequence number and hash of the newest entry. The head is updated
in the same transaction as each append, so deleting the newest entries (which leaves an intact but
shorter chain) is detected, and on PostgreSQL it is the row appenders lock to serialize themselves."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db.models import Base

#: sha256 in lowercase hex.
HASH_LENGTH = 64
ACTOR_LENGTH = 256
ACTION_LENGTH = 64
OBJECT_TYPE_LENGTH = 64
OBJECT_ID_LENGTH = 512
#: "refused: <gRPC status name>: <message>"; longer messages are clipped.
OUTCOME_LENGTH = 2048


class AuditEntryRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_object", "object_type", "object_id", "seq"),
        Index("ix_audit_log_timestamp_us", "timestamp_us"),
    )

    #: 1, 2, 3 ... without gaps: assigned by the appender under the head lock, never by the database.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    timestamp_us: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    action: Mapped[str] = mapped_column(String(ACTION_LENGTH))
    object_type: Mapped[str] = mapped_column(String(OBJECT_TYPE_LENGTH))
    object_id: Mapped[str] = mapped_column(String(OBJECT_ID_LENGTH))
    before: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    after: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    #: "" for an operation that was carried out; "refused: <status>: <message>" for one that was refused
    #: (nothing changed). Hashed only when not empty, so entries from before the column verify as before.
    outcome: Mapped[str] = mapped_column(String(OUTCOME_LENGTH), default="", server_default="")


class AuditHeadRow(Base):
    """The single row naming the newest entry (seq 0 and the genesis hash while the log is empty)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
