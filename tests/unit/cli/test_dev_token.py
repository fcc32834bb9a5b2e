"""Which token `aetherctl dev up` hands its data plane (`stack_credentials.data_plane_token`)."""

from __future__ import annotations

from control_plane.cli.stack_credentials import data_plane_token


def test_auth_off_gives_no_token() -> None:
    assert data_plane_token({}) == {}


def test_the_read_only_token_is_preferred_for_the_watch_which_only_reads() -> None:
    both = {"AETHER_ADMIN_TOKEN": "a", "AETHER_READONLY_TOKEN": "r"}
    assert data_plane_token(both) == {"AETHER_TOKEN": "r"}
    assert data_plane_token({"AETHER_ADMIN_TOKEN": "a"}) == {"AETHER_TOKEN": "a"}
    assert data_plane_token({"AETHER_ADMIN_TOKEN_FILE": "/t"}) == {"AETHER_TOKEN_FILE": "/t"}


def test_a_token_set_for_clients_is_left_alone() -> None:
    assert data_plane_token({"AETHER_ADMIN_TOKEN": "a", "AETHER_TOKEN": "x"}) == {}
    assert data_plane_token({"AETHER_ADMIN_TOKEN": "a", "AETHER_TOKEN_FILE": "/x"}) == {}
