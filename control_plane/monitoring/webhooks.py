"""Alert webhook URLs are secrets, and what may be shown of them.

A webhook URL often *is* its credential: a Slack incoming webhook (``https://hooks.slack.com/services/
T0/B0/SECRET``), a Teams or Discord one, or a receiver behind ``user:password@``. The path is the secret
as often as the userinfo, so :func:`clients.uris.redact_uri` (userinfo and secret query parameters only)
is not enough here. Outside the monitor config row and the POST itself, a webhook URL is shown only as
:func:`redact_webhook` gives it: ``scheme://host[:port]/<redacted sha256:0123456789ab>``, where the marker
holds the first 12 hex digits of the sha256 of the whole URL, so that an operator can tell two URLs apart
(and check one they hold: ``printf %s "$URL" | sha256sum``) without any caller learning the URL. That
form goes in replies to every caller, admin included (GetMonitorConfig and ConfigureMonitor: the URL is
write-only, as a password field is), in audit entries and in logs.

Because the readers get the redacted form, a client that reads the config, changes a field and sends it
all back (``aetherctl monitor configure``, the SDK's read-modify-write) sends the redacted form back:
:func:`kept` reads exactly the redacted form of the stored URL as "keep the stored URL", and refuses any
other redacted form (it would be stored as a URL that reaches no one). Audit entries written before this
rule are redacted by migration 0026 (``0026_redact_audit_webhooks``), with a frozen copy of
:func:`redact_webhook` and :func:`is_redacted` (a migration must not change with the runtime code)."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from clients.errors import InvalidArgument
from clients.uris import HIDDEN, redact_uri

#: Hex digits of the fingerprint: 48 bits tell any two URLs of one installation apart. A reader of the
#: fingerprint can test a guess of the whole URL against it offline: hopeless for a webhook token (Slack's
#: are 24 random characters), not for a short password in the userinfo, so such a receiver needs a long one.
FINGERPRINT_DIGITS = 12
_MARKER = re.compile(rf"<redacted sha256:[0-9a-f]{{{FINGERPRINT_DIGITS}}}>\Z")


def fingerprint(url: str) -> str:
    """The first :data:`FINGERPRINT_DIGITS` hex digits of the sha256 of ``url`` (UTF-8)."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_DIGITS]


def redact_webhook(url: str) -> str:
    """``url`` as it may be shown: its scheme, host and port, and the fingerprint of the whole URL in
    place of the rest; "" for no URL. Userinfo goes with the rest (see :func:`clients.uris.redact_uri`,
    which also finds a password holding a raw ``/``)."""
    if not url:
        return ""
    marker = f"<redacted sha256:{fingerprint(url)}>"
    scheme, sep, rest = redact_uri(url).partition("://")
    if not sep:  # not a URL at all: nothing of it is known to be safe to show
        return marker
    return f"{scheme}://{_authority_and_tail(rest)[0]}/{marker}"


def is_redacted(url: str) -> bool:
    """Whether ``url`` is in the form :func:`redact_webhook` gives (of whichever URL)."""
    return _MARKER.search(url) is not None


def kept(sent: str, stored: str) -> str:
    """The URL to store when a client sends ``sent`` and ``stored`` is the one stored ("" for none):
    ``sent`` itself, unless it is a redacted form. The redacted form of ``stored`` means "unchanged" (a
    client sends back what it read); any other is refused with ``InvalidArgument``: it may be another
    deployment's, or of a URL replaced since the client read it, and stored it would reach no one."""
    if not is_redacted(sent):
        return sent
    if stored and sent == redact_webhook(stored):
        return stored
    raise InvalidArgument(
        f"invalid monitor config: webhook_url {sent!r} is a redacted URL, not the redacted form of the"
        " webhook stored for this deployment; give the whole URL (or leave webhook_url empty for none)"
    )


def redact_text(text: str, url: str) -> str:
    """``text`` (an error about posting to ``url``) with ``url`` in its redacted form and every part of
    it that may be secret (userinfo, user, password, path with query) replaced by ``***``: an exception
    may quote a piece of the URL (``nonnumeric port: '...'``, a host with the userinfo left on)."""
    if not url:
        return text
    text = text.replace(url, redact_webhook(url))
    authority, tail = _authority_and_tail(url.partition("://")[2])
    userinfo = authority.rpartition("@")[0]
    pieces = [tail, userinfo, *userinfo.split(":", 1)]
    # Pieces shorter than 4 characters ("/", a one-letter user) would hide ordinary words and say little.
    secrets = {piece for raw in pieces for piece in (raw, unquote(raw)) if len(piece) >= 4}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def _authority_and_tail(rest: str) -> tuple[str, str]:
    """A URL's part after ``scheme://`` cut at the first ``/``, ``?`` or ``#``: (authority, the rest)."""
    end = min([len(rest)] + [found for found in (rest.find(mark) for mark in "/?#") if found != -1])
    return rest[:end], rest[end:]
