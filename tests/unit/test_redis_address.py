"""The data plane's reading of AETHER_REDIS_URL against redis-py's, which every control-plane writer uses
(``redis.Redis.from_url``): both must name the same database and credentials, or refuse the URL."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from redis.connection import parse_url

from clients.redis_address import RedisAddress, credentials_given_twice
from clients.uris import redact_uri


def _agrees_with_redis_py(url: str) -> RedisAddress | None:
    """The address, checked against redis-py's parse; None when the data plane refuses the URL (which it
    must for one redis-py refuses)."""
    try:
        expected: dict[str, Any] | None = parse_url(url)
    except ValueError:
        expected = None
    try:
        address = RedisAddress.from_url(url)
    except ValueError:
        return None
    assert expected is not None, f"{url!r}: redis-py refuses it, the data plane took it"
    assert address.db == expected.get("db", 0), url
    assert address.username == expected.get("username"), url
    assert address.password == expected.get("password"), url
    assert address.port == expected.get("port", 6379), url
    return address


@pytest.mark.parametrize(
    ("url", "db", "username", "password"),
    [
        ("redis://127.0.0.1:6379", 0, None, None),
        ("redis://127.0.0.1:6379/2", 2, None, None),
        ("redis://127.0.0.1:6379?db=3", 3, None, None),
        ("redis://127.0.0.1:6379/?db=3", 3, None, None),
        ("redis://127.0.0.1:6379/0?db=3", 3, None, None),  # the query's db wins, as in redis-py
        ("redis://127.0.0.1:6379/5?db=0", 0, None, None),
        ("redis://127.0.0.1:6379/0?db=%33", 3, None, None),
        ("redis://127.0.0.1:6379?password=pw", 0, None, "pw"),
        ("redis://127.0.0.1:6379?username=reader&password=p%2540w", 0, "reader", "p@w"),  # decoded twice
        ("redis://:pw@127.0.0.1:6379?password=other", 0, None, "pw"),  # the userinfo wins
        ("redis://reader:pw@127.0.0.1:6379/1?username=other&db=4", 4, "reader", "pw"),
        ("redis://:pw@127.0.0.1:6379?username=reader", 0, "reader", "pw"),
        ("redis://127.0.0.1:6379?password=a+b", 0, None, "a b"),
    ],
)
def test_a_url_names_the_database_and_credentials_redis_py_names(
    url: str, db: int, username: str | None, password: str | None
) -> None:
    address = _agrees_with_redis_py(url)
    assert address is not None
    assert (address.db, address.username, address.password) == (db, username, password)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://127.0.0.1:6379/2?socket_timeout=1", "unsupported query parameter 'socket_timeout'"),
        ("redis://127.0.0.1:6379?db=3&ssl=true", "unsupported query parameter 'ssl'"),
        ("redis://127.0.0.1:6379?db=3&db=4", "'db' is given twice"),
        ("redis://127.0.0.1:6379/3?db=", "'db' has no value"),
        ("redis://127.0.0.1:6379?db=three", "the query parameter 'db' must be a database number"),
        ("redis://127.0.0.1:6379?db=-1", "the query parameter 'db' must be a database number"),
        ("redis://127.0.0.1:6379?db=" + "7" * 5000, "the query parameter 'db' must be a database number"),
        ("redis://127.0.0.1:6379/" + "7" * 5000, "the path must be a database number"),
    ],
)
def test_a_query_the_data_plane_would_not_honour_is_refused_by_name(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RedisAddress.from_url(url)


def test_a_password_in_the_query_is_not_shown() -> None:
    with pytest.raises(ValueError) as refused:
        RedisAddress.from_url("redis://127.0.0.1:6379?password=S3cretPw&timeout=1")
    assert "S3cretPw" not in str(refused.value)


_TEXT = st.text(alphabet="0123x%+@:2a5 ", max_size=4)
_PARAMETER = st.tuples(st.sampled_from(["db", "username", "password", "d%62", "timeout"]), _TEXT)


@given(
    userinfo=st.sampled_from(["", "reader@", ":pw@", "reader:pw@", "r%40:p%25w@", ":@"]),
    port=st.sampled_from(["", ":6379", ":6380"]),
    path=st.sampled_from(["", "/", "/0", "/2", "/07", "/x", "/%33", "/1/"]),
    query=st.lists(_PARAMETER, max_size=3),
)
@example(userinfo="", port=":6379", path="/0", query=[("db", "3")])
def test_any_url_means_what_it_means_to_redis_py_or_is_refused(
    userinfo: str, port: str, path: str, query: list[tuple[str, str]]
) -> None:
    url = f"redis://{userinfo}127.0.0.1{port}{path}"
    if query:
        url += "?" + "&".join(f"{name}={value}" for name, value in query)
    _agrees_with_redis_py(url)


# Pieces of a password no message could hold by chance, joined by the characters that end a URL's
# authority early when left raw.
_PIECE = st.text(alphabet="QXZJKW", min_size=6, max_size=10)


@given(
    user=st.sampled_from(["", "default", "alice"]),
    pieces=st.lists(_PIECE, min_size=2, max_size=4),
    marks=st.lists(st.sampled_from("/#?"), min_size=1, max_size=3),
    rest=st.sampled_from(["127.0.0.1:6379/0", "127.0.0.1/0", "host:6380", "127.0.0.1:6379/0?db=1"]),
)
@example(user="default", pieces=["ab", "cdQXZJKW"], marks=["/"], rest="127.0.0.1:6379/0")
@example(user="", pieces=["QXZJKW", "QXZJKWX"], marks=["#"], rest="127.0.0.1:6379/0")
def test_a_password_with_a_raw_slash_hash_or_question_mark_is_never_shown(
    user: str, pieces: list[str], marks: list[str], rest: str
) -> None:
    """Such a password cannot be read apart from the host, path or query it runs into: the URL is refused
    with what to do, and neither the message nor redact_uri shows any piece of the password (redis-py
    splits it the same wrong way, so it was once echoed: "the path must be a database number")."""
    password = pieces[0] + "".join(marks[i % len(marks)] + piece for i, piece in enumerate(pieces[1:]))
    url = f"redis://{user}:{password}@{rest}"
    with pytest.raises(ValueError) as refused:
        RedisAddress.from_url(url)
    for shown in (str(refused.value), redact_uri(url)):
        assert not any(piece in shown for piece in pieces if len(piece) >= 6), shown


@pytest.mark.parametrize(
    ("url", "twice"),
    [
        ("redis://127.0.0.1:6379?password=pw", []),
        ("redis://:pw@127.0.0.1:6379?password=pw", []),  # the same value: nothing to choose
        ("redis://:pw@127.0.0.1:6379?password=p%2577", []),  # decoded as redis-py does: p%77 then pw
        ("redis://:pw@127.0.0.1:6379?username=reader", []),  # each credential given once
        ("redis://:pw@127.0.0.1:6379?password=other", ["password"]),
        ("redis://alice:pw@127.0.0.1:6379?username=bob&password=pw", ["username"]),
        ("redis://alice:pw@127.0.0.1:6379?username=bob&password=x", ["username", "password"]),
    ],
)
def test_credentials_given_twice_with_different_values_are_named(url: str, twice: list[str]) -> None:
    assert credentials_given_twice(url) == twice
