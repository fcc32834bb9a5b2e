"""Page tokens a caller made up are INVALID_ARGUMENT with a short message, whatever their shape: nested
deep enough to exhaust the JSON decoder (was INTERNAL), or long enough that echoing them whole overflowed
gRPC's trailing metadata (the call ended RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import base64

import pytest

from clients.errors import InvalidArgument
from control_plane.db import keyset
from control_plane.retraining.tables import RetrainingDecisionRow

ORDER = (keyset.KeyColumn(RetrainingDecisionRow.id, int, descending=True),)  # type: ignore[arg-type]


def _decode(token: str) -> object:
    return keyset.decode(token, "ListDecisions", "scope", ORDER)


@pytest.mark.parametrize(
    "token",
    [
        base64.urlsafe_b64encode(b"[" * 5000).decode(),  # nested past the recursion limit
        base64.urlsafe_b64encode(
            b'{"listing": "ListDecisions", "scope": "scope", "after": [' + b"[" * 5000
        ).decode(),
        "x" * 20_000,  # long garbage
        "x" * (keyset.MAX_TOKEN_CHARS + 1),
        keyset.encode("ListDecisions", "scope", ["y" * 20_000]),  # a well-formed token with a bad key
    ],
    ids=["deep", "deep-inside", "long", "over-the-cap", "long-bad-key"],
)
def test_a_made_up_token_is_invalid_argument_with_a_short_message(token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        _decode(token)
    assert "page_token" in info.value.message and len(info.value.message) < 400


def test_a_token_the_server_gave_out_still_decodes() -> None:
    assert _decode(keyset.encode("ListDecisions", "scope", [42])) == [42]
