"""A page of a List RPC is cut by its encoded size as well as by its count.

gRPC refuses a message over its receive limit (4 MiB by default, which the control plane and the SDK
keep) with RESOURCE_EXHAUSTED, and a client cannot get past a page it cannot receive: it failed for good.
Items of several listings are large and of varying size (a run holds up to thousands of 6,000-character
parameters, a model version up to 64 hyperparameters of 6,000 characters), so a count alone, even a small
one, does not bound a page. As GetMetricHistory's points per page do (``tracking.metrics``), a page keeps
to half the limit, leaving room for the rest of the response; unlike points, items vary in size, so each
is measured. A page always holds at least one item, so paging always makes progress: an item must itself
fit the limit, which the writes that make items large ensure (a run's parameters and tags, for one)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from google.protobuf.message import Message

from clients.errors import InvalidArgument

#: The most bytes the items of one page take on the wire: half of gRPC's default 4 MiB receive limit.
MAX_PAGE_BYTES = 2 * 1024 * 1024

#: The most bytes one item (an experiment, a registered model, an entity, a deployment) may take as a
#: message when it is written. A write is received within gRPC's 4 MiB, but the item it makes is read
#: back larger (ids, timestamps, defaults, a wrapper, a page token): a description sent just under the
#: limit made an item that no Get or List could return (RESOURCE_EXHAUSTED on the client). 3.5 MiB, as a
#: run's parameters and tags (``clients.tracking_rules.MAX_RUN_VALUES_BYTES``), leaves half a megabyte for
#: what the item gains after (a model's aliases, a deployment's canary state) and for any response's
#: envelope.
MAX_ITEM_BYTES = 3584 * 1024

#: The most bytes an item may take once changes after its write made it grow (a model version's review
#: adds who and why, an alias adds its name to the model's and the version's messages): those changes
#: check their result against this bound, not :data:`MAX_ITEM_BYTES`, so that an item written just under
#: that limit can still be reviewed or aliased. 3.75 MiB: the rest of gRPC's 4 MiB is left for a response's
#: envelope (a page token, the other fields of a lineage). The changes are capped well under the margin
#: (a review reason at 6,000 characters, 100 aliases per model): the check guards rows kept before those
#: caps and whatever grows an item next.
MAX_GROWN_ITEM_BYTES = 3840 * 1024

M = TypeVar("M", bound=Message)


def check_item(message: Message, what: str, limit: int = MAX_ITEM_BYTES) -> None:
    """INVALID_ARGUMENT when ``what``, written as ``message``, would take more than ``limit`` bytes (and so
    could not be read back within gRPC's default 4 MiB receive limit): :data:`MAX_ITEM_BYTES` for a new
    item or a rewrite of its description and tags, :data:`MAX_GROWN_ITEM_BYTES` for a change that adds to
    an existing item. Raised inside the write's transaction, before its audit entry: nothing is kept."""
    size = message.ByteSize()
    if size > limit:
        raise InvalidArgument(
            f"{what} would take {size:,} bytes as a message, over the limit of {limit:,} bytes"
            " (its description and tags take most of them); nothing was changed"
        )


def item_bytes(message: Message) -> int:
    """What ``message`` adds to a response as an item of a repeated field: tag, length and body."""
    size = message.ByteSize()
    return 1 + max(1, (size.bit_length() + 6) // 7) + size


class PageBudget:
    """The bytes left to one page, for a page whose items are built in several rounds."""

    def __init__(self, limit: int = MAX_PAGE_BYTES) -> None:
        self._left = limit
        self._taken = 0

    def admits(self, message: Message) -> bool:
        """Whether ``message`` still fits (the page's first item always does), counted in when it does."""
        self._left -= item_bytes(message)
        if self._taken and self._left < 0:
            return False
        self._taken += 1
        return True

    def take(self, messages: Iterable[M]) -> Iterator[M]:
        """The leading ``messages`` that still fit, and always the page's first item. Lazy, so that a
        caller building items one by one builds none past the cut."""
        for message in messages:
            if not self.admits(message):
                return
            yield message


def fitting(messages: Iterable[M], limit: int = MAX_PAGE_BYTES) -> Iterator[M]:
    """The leading ``messages`` that fit in one page of ``limit`` bytes (:meth:`PageBudget.take`)."""
    return PageBudget(limit).take(messages)


def chunks(messages: Iterable[M], limit: int = MAX_PAGE_BYTES) -> Iterator[list[M]]:
    """``messages`` in order, split into consecutive chunks of at most ``limit`` bytes each (a chunk
    always holds at least one message): the messages of a stream, each of which must fit gRPC's limit."""
    budget = PageBudget(limit)
    chunk: list[M] = []
    for message in messages:
        if not budget.admits(message):
            yield chunk
            budget, chunk = PageBudget(limit), []
            budget.admits(message)  # the first message of a chunk always fits
        chunk.append(message)
    if chunk:
        yield chunk


def cut(items: Iterable[M], page_size: int, limit: int = MAX_PAGE_BYTES) -> tuple[list[M], bool]:
    """The leading ``items`` of one page, up to ``page_size`` (0: no count bound) and within ``limit``
    bytes (always one), and whether any item follows them: the page needs a ``next_page_token`` exactly
    then. Builds at most one item past the page, so pass a lazy iterable of at most ``page_size + 1``
    items (rows read one past the page) and no more is read or built."""
    budget = PageBudget(limit)
    page: list[M] = []
    for item in items:
        if (page_size and len(page) == page_size) or not budget.admits(item):
            return page, True
        page.append(item)
    return page, False
