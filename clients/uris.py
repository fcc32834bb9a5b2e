"""Credentials in storage URIs: which parts of a URI are secret, and the URI without them.

pyarrow's filesystem URIs can carry credentials: ``s3://ACCESS_KEY:SECRET_KEY@bucket/prefix`` (S3 takes
the userinfo as its access key and secret key), ``abfs://container:ACCOUNT_KEY@account.dfs.core.windows.net``
(the password is the account key) and query parameters such as Azure's ``client_secret``. Such a URI
must never reach text that leaves the process or is kept: error messages, gRPC status details, logs,
audit entries, API responses, database rows. :func:`redact_uri` gives the form that may: the same URI
without its credentials. It still names the same place, and pyarrow still opens it, with credentials
from the environment (``AWS_ACCESS_KEY_ID``…) instead of from the URI.

What counts as a credential:

* the whole userinfo (``user:password@``): for S3 the user name is the access key ID, so it goes too;
  except under ``abfs``/``abfss``, where the user name is the container and only the password goes;
* every query parameter whose name is a credential's (:func:`is_secret_parameter`): compared without case
  and separators (``-``, ``_``, ``.``), the name is ``key``, ``sig`` or ``auth``, or ends with a
  credential's word: ``password``, ``passwd``, ``pwd``, ``passphrase``, ``secret``, ``token``,
  ``signature``, ``credential(s)``, ``authorization``, or a secret kind of key (``access_key``,
  ``secret_key``, ``account_key``, ``private_key``, ``api_key``, ``sse_customer_key``, ``access_key_id``…).
  So ``session_token``, ``client_secret``, ``sas_token``, Azure SAS's ``sig``, ``X-Amz-Signature``,
  ``X-Amz-Credential`` and ``AccountKey`` are secrets; ``partition_key``, ``credential_kind`` and GCS's
  ``credential_token_expiration`` are not. A name that merely *contains* such a word was once taken for a
  secret, and :func:`holds_credentials` then refused a valid source URI.

The URI is read as RFC 3986 says, which is how pyarrow reads it. A secret with a raw ``/``, ``?``, ``#`` or
``@`` (AWS secret keys often contain ``/``) makes a URI that is not well-formed: pyarrow mostly refuses
it, and the places that open a URI never echo one it refused (see :func:`redact_text`'s callers). Not
always: ``s3://KEY:/SECRET@bucket/…`` (a secret that starts with ``/``, or ``KEY:123/…``) is well-formed,
with the host ``KEY``, an empty or numeric port and the rest of the secret in the path, and pyarrow opens
it (as the wrong bucket). A bucket name never holds ``:``, so for ``s3``, ``gs`` and ``gcs`` such an
authority followed by an ``@`` before the query is read as credentials with a raw ``/``
(:func:`misplaced_credentials`): redacted like any userinfo, and refused by the places that open URIs.
Under any other scheme, an authority that holds ``:`` but no ``@``, followed anywhere by an ``@``, is
read as credentials running to the last ``@`` (their password may hold a raw ``/``, ``?`` or ``#``:
``redis://default:ab/cd@host:6379/0``, ``http://u:s3cr#t@host``) unless it is a well-formed
``host:port`` (``hdfs://namenode:8020/data@v2`` names a path); under ``redis``/``rediss``, whose path is
a database number, even then (``redis://:123/s3cret@host``). Redacting an ``@`` of a query value too is
safer than showing part of a password."""

from __future__ import annotations

from urllib.parse import unquote

#: Credential parameter names, and the endings of others, without case and separators (see the docstring).
_SECRET_NAMES = frozenset({"key", "sig", "auth"})
_SECRET_ENDINGS = (
    *("password", "passwd", "pwd", "passphrase", "secret", "token", "signature", "credential", "credentials"),
    "authorization",
    *(f"{kind}key" for kind in ("access", "secret", "account", "private", "api", "customer", "shared")),
    *(f"{kind}key" for kind in ("master", "signing", "encryption", "client", "subscription", "storage")),
    "accesskeyid",
)
#: Schemes whose user name is not a credential (Azure: the container).
_USER_IS_A_NAME = frozenset({"abfs", "abfss"})
#: Schemes whose host is a bucket name, which never holds ':' (see the module's docstring).
_BUCKET_SCHEMES = frozenset({"s3", "gs", "gcs"})
#: Schemes whose path is a database number, which never holds '@' (see the module's docstring).
_DATABASE_PATH_SCHEMES = frozenset({"redis", "rediss"})
#: What a secret is replaced with in free text.
HIDDEN = "***"


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter called ``name`` (raw or percent-encoded) carries a credential: a
    credential's name or ending (see the module's docstring), not any name that contains one's word."""
    bare = unquote(name).lower().translate(_SEPARATORS)
    return bare in _SECRET_NAMES or bare.endswith(_SECRET_ENDINGS)


_SEPARATORS = str.maketrans("", "", "-_. ")


def _split(uri: str) -> tuple[str, str, str, str, str] | None:
    """``(scheme, userinfo, host, path, query)`` of ``scheme://[userinfo@]host[path][?query]``, the
    fragment (if any) left on ``query``'s end; ``None`` for a string without ``://`` (a plain path)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return None
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    authority, after = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if not at:
        userinfo = ""
        raw = _raw_slash_userinfo_end(scheme, authority, rest)
        if raw is not None:  # USER:PASSWORD@ whose password holds a raw '/', '?' or '#': it runs to that '@'
            userinfo, rest = rest[:raw], rest[raw + 1 :]
            end = min([len(rest)] + [found for found in (rest.find(m) for m in "/?#") if found != -1])
            host, after = rest[:end], rest[end:]
    path, question, query = after.partition("?")
    if not question:
        path, hash_mark, fragment = after.partition("#")
        query = hash_mark + fragment
    else:
        query = question + query
    return scheme, userinfo, host, path, query


def _raw_slash_userinfo_end(scheme: str, authority: str, rest: str) -> int | None:
    """Where the ``@`` ending ``USER:PASSWORD`` is in ``rest`` (what follows ``scheme://``) when the
    password holds a raw ``/``, ``?`` or ``#`` (see the module's docstring); None for any other URI."""
    if ":" not in authority:
        return None
    if scheme.lower() in _BUCKET_SCHEMES:
        stop = min([len(rest)] + [found for found in (rest.find(m) for m in "?#") if found != -1])
        at = rest.rfind("@", 0, stop)
    else:
        host, _, port = authority.rpartition(":")
        if scheme.lower() not in _DATABASE_PATH_SCHEMES and host and (port.isdigit() or not port):
            return None  # host:port, and the '@' is the path's (hdfs://namenode:8020/data@v2)
        # A password may hold a raw '?' or '#' (redis://:s3cr#t@host): the last '@' anywhere ends it. A
        # raw '@' in a query value then hides more than the credentials, never less.
        at = rest.rfind("@")
    return at if at != -1 else None


def misplaced_credentials(uri: str) -> bool:
    """Whether ``uri`` holds credentials pyarrow would not read as credentials: on an object store whose
    host is a bucket, a secret with a raw ``/`` (pyarrow would take part of it for the bucket and the rest
    for the path). The places that open URIs refuse such a URI, without showing it."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return False
    end = min([len(rest)] + [found for found in (rest.find(m) for m in "/?#") if found != -1])
    authority = rest[:end]
    if scheme.lower() not in _BUCKET_SCHEMES:  # elsewhere a path may hold '@' (hdfs://host:8020/a@b)
        return False
    return "@" not in authority and _raw_slash_userinfo_end(scheme, authority, rest) is not None


#: What the places that refuse such a URI say (with no part of the URI).
MISPLACED_CREDENTIALS = (
    "a credential written into the URI holds a raw '/', so the URI would name another bucket"
)


def _secret_values(uri: str) -> list[str]:
    """The credentials ``uri`` holds, as written and percent-decoded (longest first)."""
    parts = _split(uri)
    if parts is None:
        return []
    scheme, userinfo, _, _, query = parts
    found: list[str] = []
    if userinfo:
        user, _, password = userinfo.partition(":")
        found.append(password)
        if scheme.lower() not in _USER_IS_A_NAME:
            found.append(user)
    body = query[1:].partition("#")[0] if query.startswith("?") else ""
    for item in body.split("&"):
        name, _, value = item.partition("=")
        if is_secret_parameter(name):
            found.append(value)
    decoded = [unquote(value) for value in found]
    # A secret with a raw '/' may be quoted in pieces (pyarrow names the part after the '/' as a path);
    # pieces too short to be only a secret's are left alone.
    pieces = [piece for value in decoded for piece in value.split("/") if len(piece) >= 8]
    return sorted({value for value in [*found, *decoded, *pieces] if value}, key=len, reverse=True)


def holds_credentials(uri: str) -> bool:
    """Whether ``uri`` holds a credential (:func:`redact_uri` would take one out). Not whether the two
    differ: redacting also tidies an empty query or a stray ``&``, which hold no secret."""
    return bool(_secret_values(uri)) or misplaced_credentials(uri)


def redact_uri(uri: str) -> str:
    """``uri`` without its credentials (see the module's docstring); a plain path comes back as is."""
    parts = _split(uri)
    if parts is None:
        return uri
    scheme, userinfo, host, path, query = parts
    kept_user = ""
    if userinfo and scheme.lower() in _USER_IS_A_NAME:
        user = userinfo.partition(":")[0]
        kept_user = f"{user}@" if user else ""
    if query.startswith("?"):
        body, hash_mark, fragment = query[1:].partition("#")
        kept = [item for item in body.split("&") if item and not is_secret_parameter(item.partition("=")[0])]
        query = ("?" + "&".join(kept) if kept else "") + hash_mark + fragment
    return f"{scheme}://{kept_user}{host}{path}{query}"


def redact_text(text: str, uri: str) -> str:
    """``text`` (say, an error message about ``uri``) with ``uri`` replaced by its redacted form and every
    credential ``uri`` holds replaced by ``***`` wherever it appears."""
    text = text.replace(uri, redact_uri(uri))
    for secret in _secret_values(uri):
        text = text.replace(secret, HIDDEN)
    return text
