"""Status messages are cut to a fixed size as gRPC sends them: messages name what the caller sent, and one
past the receiver's metadata limit made gRPC drop the whole status (RESOURCE_EXHAUSTED "Stream removed"
instead of NOT_FOUND or INVALID_ARGUMENT)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from clients.errors import MAX_STATUS_MESSAGE_BYTES, status_message


def wire_bytes(text: str) -> int:
    """The size of ``text`` as a ``grpc-message`` trailer: gRPC percent-encodes every byte of its UTF-8 but
    printable ASCII other than '%'."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in text.encode("utf-8", "surrogatepass"))


MARKER = re.compile(r"\.\.\. \[(\d+) more characters cut\]$")


def check(text: str, limit: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    cut = status_message(text, limit)
    if wire_bytes(text) <= limit:
        assert cut == text
        return cut
    assert wire_bytes(cut) <= limit
    marker = MARKER.search(cut)
    assert marker is not None, cut[-80:]
    kept = cut[: marker.start()]
    assert text.startswith(kept) and len(kept) + int(marker.group(1)) == len(text)
    return cut


def test_a_message_that_fits_is_sent_whole() -> None:
    for text in ("", "deployment 'x' not found", "é" * 100, "x" * MAX_STATUS_MESSAGE_BYTES):
        assert status_message(text) == text


def test_a_long_message_is_cut_to_the_limit_with_a_marker_saying_how_much() -> None:
    text = f"deployment {'x' * 20_000!r} not found"  # 20,023 characters
    cut = check(text)
    assert cut.startswith("deployment 'xxx") and len(cut) == MAX_STATUS_MESSAGE_BYTES
    # 4,065 kept, and the 31 characters of the marker.
    assert cut.endswith("x... [15958 more characters cut]")


def test_characters_gRPC_percent_encodes_count_as_what_it_sends() -> None:
    # 4 KiB of them was 12 KiB on the wire, past the default 8 KiB soft limit.
    for char in ("%", "\n", "é", "€", "😀"):
        cut = check(char * 5000)
        assert set(cut[: MARKER.search(cut).start()]) == {char}  # type: ignore[union-attr]


@given(st.text(max_size=3000), st.integers(min_value=64, max_value=2000))
def test_any_text_is_cut_on_a_character_boundary_within_the_limit(text: str, limit: int) -> None:
    check(text, limit)
