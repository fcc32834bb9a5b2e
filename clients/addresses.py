"""An address to dial, as every SDK client takes it (``ServiceClient``, when it is made) and ``aetherctl``
takes the control plane's (``--control-plane``, ``AETHER_CONTROL_PLANE_ADDR``, before any call).

gRPC takes a malformed address without a word, and each way it does so misleads: a port past 65535 is
taken modulo 65536 (``127.0.0.1:99999`` dialled port 34463, reaching whatever listens there), a host
without a port dials 443, and an empty address logs gRPC's own lines on stderr before an UNKNOWN status.
``http://host:port`` (a URL where gRPC wants no scheme) failed only at the first call. A target in gRPC's URI
form (``dns:///host:port``, ``unix:/path``, ``ipv4:...``) is taken as it is."""

from __future__ import annotations

#: The schemes of gRPC's target URIs, which name addresses ``HOST:PORT`` cannot (a Unix socket).
GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")

EXPECTED = "expected HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:50051)"


def dial_address_problem(text: str) -> str | None:
    """Why ``text`` is no address to dial (None when it is one): ``HOST:PORT`` with a port from 1 to
    65535 (an IPv6 host in brackets, ``[::1]:50051``), or a gRPC target URI."""
    if text.startswith(GRPC_SCHEMES):
        return None
    host, colon, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    # An IPv6 host only in brackets ("a:b:50051" would pass otherwise); no blank, which no host holds.
    well_formed = bool(host) and (bracketed or not any(c in host for c in ":[]"))
    well_formed = well_formed and not any(c.isspace() for c in text)
    whole = port.isascii() and port.isdigit()
    if colon and well_formed and whole and 1 <= int(port) <= 65535:
        return None
    return f"{EXPECTED}, got {text!r}"
