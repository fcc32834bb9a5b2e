"""The Redis keys a streaming materializer keeps its state under, one set per view version and consumer
group: its ownership, the applied and rejected id sets, the outbox of receipts and the trim points
(what each holds: ``commit``, ``rebuild``, ``redis_source``)."""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.features.online_cleanup import deleted_view_fence, materializer_prefix


@dataclass(frozen=True)
class StateKeys:
    """Redis keys of one materializer (view version x consumer group). A delete's online cleanup removes
    the state keys of the version's (``features/online_cleanup.MATERIALIZER_STATE``)."""

    prefix: str
    #: Exists once the view version is deleted (``features/online_cleanup.py``): commits stop then.
    deleted: str

    @classmethod
    def of(cls, view: str, version: int, group: str) -> StateKeys:
        return cls(materializer_prefix(view, version) + group, deleted_view_fence(view, version))

    @property
    def owner(self) -> str:
        return self.prefix + ":owner"

    @property
    def applied(self) -> str:
        return self.prefix + ":applied"

    @property
    def rejected(self) -> str:
        return self.prefix + ":rejected"

    @property
    def outbox(self) -> str:
        return self.prefix + ":outbox"

    @property
    def trimmed_below(self) -> str:
        """The stream time (ms) below which the applied / rejected ids were dropped: the greatest trim
        point committed (``RAISE_TRIM_POINT``), never lowered."""
        return self.prefix + ":trimmed_below"

    @property
    def trim_reach(self) -> str:
        """How far (ms) before its resume point the run that set ``trimmed_below`` trimmed: its longest
        window plus its lateness (``rebuild.warn_if_trimmed``)."""
        return self.prefix + ":trim_reach"

    @property
    def ingested_high(self) -> str:
        """The greatest ingestion (write) time, in µs, of what the group's materializers committed: a
        successor starts above it, whatever its clock (``WindowAggregator.ingested_after``)."""
        return self.prefix + ":ingested_high"

    @property
    def refused_ahead(self) -> str:
        """The rejected ids of a Redis stream whose stream time was ahead of the clock when they were
        refused (``Committer._rejected_adds``), scored by that time, not by their stream time: scored
        years ahead (a producer's explicit id, and every ``*`` id after it), they were below no trim
        point, one member leaked per message. Trimmed once acknowledged (``TRIM_REFUSED_AHEAD``)."""
        return self.prefix + ":refused_ahead"

    @property
    def refused_ahead_through(self) -> str:
        """The greatest id trimmed from ``refused_ahead``: every entry of the stream up to it was processed
        and acknowledged, so a lost group is re-created after it (``redis_source.CREATE_GROUP``), not at the
        trim point, from which the trimmed ids ahead were read and counted a second time."""
        return self.prefix + ":refused_ahead_through"

    @property
    def state(self) -> tuple[str, ...]:
        """The keys a delete removes (``features/online_cleanup.MATERIALIZER_STATE``): not the outbox nor
        the receipts."""
        return (
            self.owner, self.applied, self.rejected, self.trimmed_below, self.trim_reach, self.ingested_high,
            self.refused_ahead, self.refused_ahead_through,
        )  # fmt: skip

    def receipt(self, receipt_id: str) -> str:
        return f"{self.prefix}:receipt:{receipt_id}"
