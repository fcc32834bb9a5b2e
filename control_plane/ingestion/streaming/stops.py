"""Why a stream materializer stops for good (the materializer, its source and its drain retry raise them;
``__main__`` turns the view's end into one line and exit status 1)."""

from __future__ import annotations

__all__ = ["Fenced", "StopAsked", "ViewDeleted", "ViewRetired"]


class StopAsked(RuntimeError):
    """A stop (SIGTERM, SIGINT) was asked while the materializer waited out an outage of the metadata
    database (its outbox drain, ``drain_retry.py``) or of Redis (``RedisStreamSource.retrying``): it stops
    without waiting for the outage to end. Nothing is lost: committed batches stay in the outbox (in
    Redis), which the next materializer of the view drains when it starts, and unacknowledged events stay
    in the stream."""


class Fenced(RuntimeError):
    """Another materializer took over this view and group."""


class ViewDeleted(Fenced):
    """The view version was deleted: the materializer stops rather than write values that the delete's
    online cleanup removes (and that nothing would remove after it). Raised once the materializer has
    drained its outbox and removed its state keys (``_finish_deleted``)."""


class ViewRetired(Fenced):
    """The view version was retired (not served, nor ingested into: FAILED_PRECONDITION, as a batch run
    stops with ``version_gate.VersionGone``): the materializer stops writing into it. Raised once it has
    drained its outbox, so what it committed before is stored and counted; its state keys stay (a delete's
    cleanup removes them) and so do its online values, until their TTL, as a retire removes none."""
