"""A FAKE S3 endpoint: an in-memory bucket behind the S3 REST calls that pyarrow's S3 filesystem makes
(head/get/put/copy/delete object, multipart uploads, ListObjectsV2, DeleteObjects), on a loopback port.

It stands in for a real object store because none can be installed here (no S3-compatible server on apt,
and this machine reaches no cloud), yet the artifact store's object-store path must be tested with the
real client: pyarrow's S3 output stream publishes on ``close()`` whatever it was given, which a local
folder cannot show. Known gaps: no authentication (any key is accepted), no versioning, one bucket.
``requests`` records every call as ``(method, key, query)`` so a test can tell which keys were touched.

A test can make it refuse a CopyObject whose source is over ``max_copy_size`` bytes, as S3 does above
5 GiB, and make reads of some keys fail partway (:meth:`FakeS3Server.fail_reads`).
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import uuid
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"
_ISO_DATE = "2024-01-01T00:00:00.000Z"
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


class FakeS3Server:
    def __init__(self, bucket: str = "aether", *, max_copy_size: int | None = None) -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.max_copy_size = max_copy_size
        self._failing_reads: list[tuple[str, int]] = []
        self._uploads: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-s3", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def uri(self, prefix: str, access_key: str = "test", secret_key: str = "test") -> str:
        """A pyarrow URI for ``prefix`` in the bucket, with static keys in its userinfo (so no credential
        lookup ever runs; any key is accepted)."""
        userinfo = f"{quote(access_key, safe='')}:{quote(secret_key, safe='')}"
        return (
            f"s3://{userinfo}@{self.bucket}/{prefix}?endpoint_override=127.0.0.1:{self.port}"
            "&scheme=http&region=us-east-1"
        )

    def fail_reads(self, key_part: str, from_offset: int = 0) -> None:
        """From now on, a GET of a key containing ``key_part`` whose range starts at ``from_offset`` or
        later answers 403 AccessDenied (say, the key was revoked): a read that breaks partway. Not 500,
        which pyarrow retries for seconds before it gives up."""
        with self._lock:
            self._failing_reads.append((key_part, from_offset))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler_for(s3: FakeS3Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: with Nagle's algorithm on, each reply waited for
        # the client's delayed ACK (~40 ms on loopback), which made every S3 call of the suite that slow.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        # Request plumbing -------------------------------------------------------------------------

        def _target(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            path = unquote(parts.path).lstrip("/")
            bucket, _, key = path.partition("/")
            if bucket != s3.bucket:
                raise LookupError(bucket)
            return key, parse_qs(parts.query, keep_blank_values=True)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raw = self._read_http_chunks()
            else:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if "aws-chunked" in self.headers.get("Content-Encoding", "") or self.headers.get(
                "x-amz-content-sha256", ""
            ).startswith("STREAMING-"):
                return _decode_aws_chunked(raw)
            return raw

        def _read_http_chunks(self) -> bytes:
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()

        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if body and "Content-Type" not in (headers or {}):
                self.send_header("Content-Type", "application/xml")
            if "Content-Length" not in (headers or {}):  # a HEAD tells the object's size instead
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _xml(self, root: str, inner: str, status: int = 200) -> None:
            body = f'<?xml version="1.0" encoding="UTF-8"?><{root} xmlns="{_XMLNS}">{inner}</{root}>'
            self._reply(status, body.encode())

        def _error(self, status: int, code: str, message: str = "") -> None:
            self._xml("Error", f"<Code>{code}</Code><Message>{escape(message or code)}</Message>", status)

        def _dispatch(self) -> None:
            try:
                key, query = self._target()
            except LookupError:
                self._body()
                self._error(404, "NoSuchBucket")
                return
            body = self._body() if self.command in ("PUT", "POST") else b""
            with s3._lock:
                s3.requests.append((self.command, key, "&".join(sorted(query))))
                getattr(self, f"_{self.command.lower()}")(key, query, body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _dispatch

        # Operations (called under the server's lock) -----------------------------------------------

        def _head(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
            if not key:
                self._reply(200)  # HeadBucket
            elif key in s3.objects:
                self._reply(200, headers=_object_headers(s3.objects[key]))
            else:
                self._reply(404)

        def _get(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
            if not key:
                self._list(query)
                return
            if key not in s3.objects:
                self._error(404, "NoSuchKey")
                return
            data = s3.objects[key]
            headers = _object_headers(data)
            wanted = self.headers.get("Range", "")
            start = int(wanted[6:].partition("-")[0]) if wanted.startswith("bytes=") else 0
            if any(part in key and start >= offset for part, offset in s3._failing_reads):
                self._error(403, "AccessDenied")
                return
            if wanted.startswith("bytes="):
                first_text, _, last_text = wanted[6:].partition("-")
                first = int(first_text)
                last = min(int(last_text) if last_text else len(data) - 1, len(data) - 1)
                if first >= len(data):
                    self._error(416, "InvalidRange")
                    return
                headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
                headers["Content-Length"] = str(last + 1 - first)
                self._reply(206, data[first : last + 1], headers)
                return
            self._reply(200, data, headers)

        def _put(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
            if not key:
                self._reply(200)  # CreateBucket: the bucket exists already
            elif "uploadId" in query:
                upload = s3._uploads.get(query["uploadId"][0])
                if upload is None:
                    self._error(404, "NoSuchUpload")
                    return
                upload[int(query["partNumber"][0])] = body
                self._reply(200, headers={"ETag": _etag(body)})
            elif source := self.headers.get("x-amz-copy-source"):
                source_key = unquote(source).lstrip("/").partition("/")[2]
                if source_key not in s3.objects:
                    self._error(404, "NoSuchKey")
                    return
                if s3.max_copy_size is not None and len(s3.objects[source_key]) > s3.max_copy_size:
                    message = "The specified copy source is larger than the maximum allowable size for a copy"
                    self._error(400, "InvalidRequest", f"{message} source: {s3.max_copy_size}")  # S3's words
                    return
                s3.objects[key] = s3.objects[source_key]
                inner = f"<LastModified>{_ISO_DATE}</LastModified><ETag>{_etag(s3.objects[key])}</ETag>"
                self._xml("CopyObjectResult", inner)
            else:
                s3.objects[key] = body
                self._reply(200, headers={"ETag": _etag(body)})

        def _post(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
            if "uploads" in query:
                upload_id = uuid.uuid4().hex
                s3._uploads[upload_id] = {}
                inner = f"<Bucket>{s3.bucket}</Bucket><Key>{escape(key)}</Key>"
                inner += f"<UploadId>{upload_id}</UploadId>"
                self._xml("InitiateMultipartUploadResult", inner)
            elif "uploadId" in query:
                parts = s3._uploads.pop(query["uploadId"][0], None)
                if parts is None:
                    self._error(404, "NoSuchUpload")
                    return
                s3.objects[key] = b"".join(parts[number] for number in sorted(parts))
                inner = (
                    f"<Location>/{s3.bucket}/{escape(key)}</Location><Bucket>{s3.bucket}</Bucket>"
                    f"<Key>{escape(key)}</Key><ETag>{_etag(s3.objects[key])}</ETag>"
                )
                self._xml("CompleteMultipartUploadResult", inner)
            elif "delete" in query:
                deleted = ""
                for element in ElementTree.fromstring(body).iter():
                    if element.tag.rsplit("}", 1)[-1] == "Key" and element.text is not None:
                        s3.objects.pop(element.text, None)
                        deleted += f"<Deleted><Key>{escape(element.text)}</Key></Deleted>"
                self._xml("DeleteResult", deleted)
            else:
                self._error(400, "InvalidRequest")

        def _delete(self, key: str, query: dict[str, list[str]], body: bytes) -> None:
            if "uploadId" in query:
                s3._uploads.pop(query["uploadId"][0], None)
            else:
                s3.objects.pop(key, None)
            self._reply(204)

        def _list(self, query: dict[str, list[str]]) -> None:
            prefix = query.get("prefix", [""])[0]
            delimiter = query.get("delimiter", [""])[0]
            max_keys = int(query.get("max-keys", ["1000"])[0])
            start = int(query.get("continuation-token", ["0"])[0] or 0)
            entries: list[tuple[str, bool]] = []  # (key or common prefix, is a prefix)
            for key in sorted(s3.objects):
                if not key.startswith(prefix):
                    continue
                rest = key[len(prefix) :]
                if delimiter and delimiter in rest:
                    common = prefix + rest.split(delimiter, 1)[0] + delimiter
                    if (common, True) not in entries:
                        entries.append((common, True))
                else:
                    entries.append((key, False))
            page = entries[start : start + max_keys]
            truncated = start + max_keys < len(entries)
            inner = (
                f"<Name>{s3.bucket}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
                f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>"
            )
            if truncated:
                inner += f"<NextContinuationToken>{start + max_keys}</NextContinuationToken>"
            for name, is_prefix in page:
                if is_prefix:
                    inner += f"<CommonPrefixes><Prefix>{escape(name)}</Prefix></CommonPrefixes>"
                else:
                    data = s3.objects[name]
                    inner += (
                        f"<Contents><Key>{escape(name)}</Key><LastModified>{_ISO_DATE}</LastModified>"
                        f"<ETag>{_etag(data)}</ETag><Size>{len(data)}</Size>"
                        "<StorageClass>STANDARD</StorageClass></Contents>"
                    )
            self._xml("ListBucketResult", inner)

    return Handler


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'  # S3's ETag of a single-part object


def _object_headers(data: bytes) -> dict[str, str]:
    return {
        "Content-Length": str(len(data)),
        "Last-Modified": _DATE,
        "ETag": _etag(data),
        "Content-Type": "application/octet-stream",
    }


def _decode_aws_chunked(raw: bytes) -> bytes:
    """The payload of an ``aws-chunked`` body: ``<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n`` pieces,
    a zero-size piece, then optional trailers."""
    data, position = b"", 0
    while True:
        end = raw.index(b"\r\n", position)
        size = int(raw[position:end].split(b";")[0], 16)
        if size == 0:
            return data
        data += raw[end + 2 : end + 2 + size]
        position = end + 2 + size + 2
