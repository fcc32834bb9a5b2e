"""A Redis URL read exactly as the control plane's writers (redis-py's ``Redis.from_url``) read it, so that
the data plane reads the database they write (:class:`RedisAddress`)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from clients.uris import redact_uri

#: The query parameters of a Redis URL that the data plane reads. The control plane's writers open the same
#: URL with redis-py (``redis.Redis.from_url``), which takes ``?db=`` over the path's database and the
#: user name and password of ``?username=`` / ``?password=`` when the URL's userinfo has none; read any
#: other way, the data plane would read another database than the one written (every key MISSING).
QUERY_PARAMETERS = frozenset({"db", "username", "password"})
#: Digits in a database number: Redis's are below 2**31. Checked before int(), which refuses (with an
#: unrelated message) a number of more than 4,300 digits.
_DB_DIGITS = 10


def _db_number(text: str, shown: str, where: str) -> int:
    if not (0 < len(text) <= _DB_DIGITS and text.isascii() and text.isdigit()):
        raise ValueError(f"Redis URL {shown!r}: {where} must be a database number")
    return int(text)


def _query(query: str, shown: str) -> dict[str, str]:
    """The URL's query parameters, decoded as redis-py's ``parse_url`` decodes them (``parse_qs`` and then
    ``unquote`` once more), so that both read the same values. ValueError for a parameter the data plane
    does not read: redis-py would apply it to the writers (a socket timeout, say) but this client would
    not, and one the data plane should honour must not be dropped without a word. A parameter given
    twice or without a value is refused too: redis-py takes the first or ignores it, which hides a typo."""
    found: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in QUERY_PARAMETERS:
            allowed = ", ".join(sorted(QUERY_PARAMETERS))
            raise ValueError(
                f"Redis URL {shown!r}: unsupported query parameter {name!r} (the data plane reads {allowed})"
            )
        if name in found:
            raise ValueError(f"Redis URL {shown!r}: the query parameter {name!r} is given twice")
        if not value:
            raise ValueError(f"Redis URL {shown!r}: the query parameter {name!r} has no value")
        found[name] = unquote(value)
    return found


#: Why a URL whose password holds a raw '/', '?' or '#' is refused; the URL is not shown, since such a
#: password cannot be told from the host, path or query it runs into.
UNREADABLE_PASSWORD = (
    "unusable Redis URL (not shown: part of its password would be): a password with '/', '#' or '?' "
    "must be percent-encoded (%2F, %23, %3F)"
)


def _password_misread(parts: SplitResult) -> bool:
    """Whether an ``@`` outside the netloc shows a password cut short by a raw ``/``, ``?`` or ``#``:
    an ``@`` in the path (a database number), in the fragment or in a query parameter's name never
    belongs there. One in a query value (``?password=a@b``) is that value's."""
    if "@" in parts.path or "@" in parts.fragment:
        return True
    return any("@" in name for name, _ in parse_qsl(parts.query, keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """The address redis-py's ``Redis.from_url`` gives the same URL (see :data:`QUERY_PARAMETERS`):
        ``?db=`` over the path's database, the userinfo's user name and password over ``?username=`` and
        ``?password=``. ValueError naming the URL without its password for one this client cannot use."""
        shown = redact_uri(url)
        parts = urlsplit(url)
        if _password_misread(parts):
            raise ValueError(UNREADABLE_PASSWORD)
        if parts.scheme != "redis":
            raise ValueError(
                f"unsupported Redis URL {shown!r}: expected redis://[USER:PASSWORD@]HOST:PORT/DB"
            )
        query = _query(parts.query, shown)
        path = parts.path.lstrip("/")
        db = _db_number(path, shown, "the path") if path else 0
        if "db" in query:
            db = _db_number(query["db"], shown, "the query parameter 'db'")
        try:
            port = parts.port or 6379
        except ValueError:  # urlsplit's "Port could not be cast ... 's3cr'" quotes the netloc's text
            raise ValueError(f"Redis URL {shown!r}: the port must be a number from 0 to 65535") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else query.get("username"),
            password=unquote(parts.password) if parts.password else query.get("password"),
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"


def credentials_given_twice(url: str) -> list[str]:
    """The credentials (``"username"``, ``"password"``) that ``url``, one :meth:`RedisAddress.from_url`
    takes, gives both in its userinfo and in its query with different values. redis-py (and so
    :class:`RedisAddress`) takes the userinfo's without a word; a caller that must not guess which one
    was meant (``aetherctl dev up``, which sets the password of the Redis it starts) refuses such a URL."""
    parts = urlsplit(url)
    query = _query(parts.query, redact_uri(url))
    userinfo = {"username": parts.username, "password": parts.password}
    return [
        name for name, value in userinfo.items() if value and name in query and unquote(value) != query[name]
    ]
