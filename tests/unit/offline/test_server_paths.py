"""``confined`` under a URI datasets root, checked against what pyarrow and an S3 client make of its
answer: the URI is opened with pyarrow's own ``FileSystem.from_uri`` (the root names its region and
endpoint, so nothing is sent), and a brute-force reference collapses the decoded path's ``.``, ``..`` and
empty segments, as the S3 client does before it sends the request."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.errors import InvalidArgument, PermissionDenied
from control_plane.offline.server_paths import confined

ENDPOINT = "127.0.0.1:9"  # never contacted: from_uri with a region and an endpoint sends nothing
ROOT = f"s3://AKIAROOT:root-secret@aether/datasets?endpoint_override={ENDPOINT}&scheme=http&region=us-east-1"
#: Where the root's keys lie, as pyarrow names them (bucket, then key).
PREFIX = "aether/datasets/"

#: Pieces of caller text, the tricky ones weighted in: dots, slashes, percent escapes of '.', '/', '%'
#: and '\\', queries, fragments, userinfo, ports, control characters, non-ASCII.
PIECES = st.sampled_from(
    [
        *("a", "b", "x.parquet", "=", "date=2024-01-01", " ", "é", "~", "+", ";", "&", ":", "@"),
        *(".", "..", "/", "//", "\\", "%", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%25", "%5c", "%00"),
        *("?", "#", "?endpoint_override=127.0.0.1:1&scheme=http", "\x00", "\x01", "\x7f", "\n"),
    ]
)
#: What may come before the caller's key: nothing (a relative path), the root as a caller writes it, or
#: near misses of it.
HEADS = st.sampled_from(
    [
        "",
        "s3://aether/datasets/",
        "s3://aether/datasets",
        "s3://aether/datasets/..",
        "s3://aether/datasets%2f",
        "s3://aether:443/datasets/",
        "s3://someone:else@aether/datasets/",
        "s3://aether.evil/datasets/",
        "s3://aether/datasets2/",
        "s3://aether/",
        "S3://aether/datasets/",
        "file:///aether/datasets/",
    ]
)
CALLER_PATHS = st.builds(lambda head, pieces: head + "".join(pieces), HEADS, st.lists(PIECES, max_size=8))


def collapsed(path: str) -> str:
    """The reference: ``path`` with its dot and empty segments resolved, as an S3 client sends it."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment not in ("", "."):
            kept.append(segment)
    return "/".join(kept)


def opened(uri: str) -> tuple[dict[str, object], str]:
    """What pyarrow opens for ``uri``: its S3 filesystem's options and the path."""
    filesystem, path = pafs.FileSystem.from_uri(uri)
    assert isinstance(filesystem, pafs.S3FileSystem)
    options = filesystem.__reduce__()[1][0]
    assert isinstance(options, dict)
    return options, path


@given(CALLER_PATHS)
def test_whatever_is_accepted_is_opened_under_the_prefix_with_the_roots_options(path: str) -> None:
    try:
        uri = confined(path, ROOT, "entity_rows_path")
    except (PermissionDenied, InvalidArgument):
        return
    options, opened_path = opened(uri)
    # The store is the root's: its endpoint, scheme and credentials, whatever the caller wrote.
    assert (options["endpoint_override"], options["scheme"], options["access_key"]) == (
        ENDPOINT,
        "http",
        "AKIAROOT",
    )
    # The key, once pyarrow has decoded it and the S3 client collapsed it, stays under the prefix, and
    # nothing was left for the client to collapse: what the check saw is what is read.
    assert collapsed(opened_path).startswith(PREFIX)
    assert collapsed(opened_path) == opened_path


SEGMENTS = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="/\\%?#"), min_size=1
).filter(lambda segment: segment not in (".", ".."))


@given(st.lists(SEGMENTS, min_size=1, max_size=4))
def test_every_plain_key_is_accepted_and_opened_as_it_is_named(segments: list[str]) -> None:
    key = "/".join(segments)
    for path in (key, f"s3://aether/datasets/{key}"):
        options, opened_path = opened(confined(path, ROOT, "output_path"))
        assert opened_path == PREFIX + key
        assert options["endpoint_override"] == ENDPOINT


@pytest.mark.parametrize(
    "path",
    [
        "a/%2e%2e/%2e%2e/private/secret.parquet",
        "s3://aether/datasets/a/%2e%2e/%2e%2e/private/secret.parquet",
        "%2E%2E/secret.parquet",
        "a%2f..%2f..%2fsecret.parquet",
        "a\\..\\..\\secret.parquet",
        "a//secret.parquet",
        "a/./secret.parquet",
        "a/",
        "a\r\nHost: evil/b",
    ],
)
def test_keys_that_could_mean_another_key_to_a_reader_on_the_way_are_refused(path: str) -> None:
    with pytest.raises(PermissionDenied, match="entity_rows_path: not a plain key under the datasets root"):
        confined(path, ROOT, "entity_rows_path")
