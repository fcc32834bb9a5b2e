"""clients.uris: a storage URI shown or stored without its credentials, for any well-formed URI."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.uris import (
    holds_credentials,
    is_secret_parameter,
    misplaced_credentials,
    redact_text,
    redact_uri,
)

# Parameters pyarrow's S3, GCS and Azure URIs accept that are not secret, and ones that are.
PLAIN_PARAMETERS = [
    "region",
    "scheme",
    "endpoint_override",
    "allow_bucket_creation",
    "project_id",
    "client_id",
    "tenant_id",
    "credential_kind",
    "blob_storage_authority",
    # Names that hold a credential's word without being one: once refused as secrets.
    "credential_token_expiration",
    "partition_key",
    "sort_key",
    "public_key_id",
    "tokenizer",
    "signed_version",
    "monkey",
    "keyspace",
]
SECRET_PARAMETERS = [
    "access_key",
    "secret_key",
    "session_token",
    "client_secret",
    "sas_token",
    "password",
    "sig",
    "X-Amz-Credential",
    "sse_customer_key",
    "AccountKey",
    "account_key",
    "key",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X-Goog-Credential",
    "AWSAccessKeyId",
    "access_token",
    "api-key",
    "passwd",
]


@dataclass
class Generated:
    uri: str
    expected: str  # the URI built from its non-secret parts only
    secrets: list[str]  # as generated (the URI holds them percent-encoded)


def encoded(text: str) -> str:
    return quote(text, safe="")


# Secrets of any characters but '*', which would blur them with the "***" that replaces them in text.
characters = st.characters(exclude_characters="*", codec="utf-8")
secret_text = st.text(alphabet=characters, min_size=1, max_size=40)


@st.composite
def uris(draw: st.DrawFn) -> Generated:
    scheme = draw(st.sampled_from(["s3", "gs", "abfs", "abfss", "hdfs", "file", "S3"]))
    host = draw(st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True))
    segment = st.text(alphabet="abcXYZ019-._~:@!$'()*+,;=", min_size=1, max_size=8)  # pchars, '@' and ':' too
    path = "".join(f"/{part}" for part in draw(st.lists(segment, max_size=4)))
    secrets: list[str] = []
    userinfo, kept_user = "", ""
    if draw(st.booleans()):
        user = draw(st.text(alphabet=characters, max_size=12))
        password = draw(st.one_of(st.none(), secret_text))
        userinfo = encoded(user) + ("" if password is None else ":" + encoded(password)) + "@"
        if password is not None:
            secrets.append(password)
        if scheme in ("abfs", "abfss"):  # Azure's user name is the container, not a credential
            kept_user = f"{encoded(user)}@" if user else ""
        elif user:
            secrets.append(user)
    parameters, kept = [], []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            name = draw(st.sampled_from(SECRET_PARAMETERS))
            value = draw(secret_text)
            secrets.append(value)
            parameters.append(f"{name}={encoded(value)}")
        else:
            item = f"{draw(st.sampled_from(PLAIN_PARAMETERS))}={encoded(draw(st.text(max_size=12)))}"
            parameters.append(item)
            kept.append(item)
    fragment = draw(st.sampled_from(["", "#part"]))
    query = "?" + "&".join(parameters) if parameters else ""
    kept_query = "?" + "&".join(kept) if kept else ""
    return Generated(
        uri=f"{scheme}://{userinfo}{host}{path}{query}{fragment}",
        expected=f"{scheme}://{kept_user}{host}{path}{kept_query}{fragment}",
        secrets=secrets,
    )


@given(generated=uris())
def test_a_redacted_uri_keeps_every_part_but_the_credentials(generated: Generated) -> None:
    redacted = redact_uri(generated.uri)
    assert redacted == generated.expected
    for secret in generated.secrets:
        for form in {secret, encoded(secret)}:
            # (a secret short enough to occur by chance in the host or path is still there, as that part)
            assert form not in redacted or form in generated.expected
    assert redact_uri(redacted) == redacted


@given(generated=uris(), before=st.text(max_size=20), after=st.text(max_size=20))
def test_no_credential_of_a_uri_survives_in_text_about_it(
    generated: Generated, before: str, after: str
) -> None:
    """An error message naming the URI, or quoting a credential as written or decoded, keeps none."""
    quoted = " ".join(f"{secret} {encoded(secret)}" for secret in generated.secrets)
    text = redact_text(f"{before}{generated.uri} {quoted}{after}", generated.uri)
    for secret in generated.secrets:
        assert secret not in text
        assert encoded(secret) not in text


def test_examples() -> None:
    assert (
        redact_uri(
            "s3://AKIAEXAMPLE:wJalr%2FK7MDENG@models/prod?region=eu-west-1&endpoint_override=minio:9000"
        )
        == "s3://models/prod?region=eu-west-1&endpoint_override=minio:9000"
    )
    assert redact_uri("s3://models/prod?secret_key=s3cr3t&access_key=AK") == "s3://models/prod"
    assert (
        redact_uri("abfss://weights:AccountKey%3D%3D@acct.dfs.core.windows.net/m?client_secret=x&client_id=y")
        == "abfss://weights@acct.dfs.core.windows.net/m?client_id=y"
    )
    assert redact_uri("/srv/artifacts/sha256/ab") == "/srv/artifacts/sha256/ab"
    assert redact_uri("s3://bucket/v1@2024:01/model") == "s3://bucket/v1@2024:01/model"  # '@' in a path
    # A secret with a raw '/' that leaves the URI well-formed (host = the access key): still credentials on
    # an object store, whose bucket names never hold ':'; elsewhere host:port/path@… is what it says.
    assert redact_uri("s3://AKIA:/wJalr/K7MD@models/prod?region=x") == "s3://models/prod?region=x"
    assert redact_uri("gs://AKIA:1234/wJalr@models/prod") == "gs://models/prod"
    assert redact_uri("hdfs://namenode:8020/data@v2/x") == "hdfs://namenode:8020/data@v2/x"
    assert misplaced_credentials("s3://AKIA:/wJalr@models/prod") and misplaced_credentials("s3://A:1/b@c")
    assert not misplaced_credentials("s3://AKIA:wJalr%2FK7@models/prod")
    assert not misplaced_credentials("s3://bucket/v1@2024:01/model")
    assert not misplaced_credentials("hdfs://namenode:8020/data@v2/x") and not misplaced_credentials(
        "/a:b/c@d"
    )
    assert not is_secret_parameter("endpoint_override") and is_secret_parameter("Session%5FToken")


@pytest.mark.parametrize("name", SECRET_PARAMETERS)
def test_a_credentials_name_is_a_secret_however_it_is_written(name: str) -> None:
    for form in (name, name.upper(), name.lower(), encoded(name), name.replace("_", "-")):
        assert is_secret_parameter(form), form
    assert holds_credentials(f"s3://bucket/prefix?region=x&{name}=value")


@pytest.mark.parametrize("name", PLAIN_PARAMETERS)
def test_a_name_that_only_contains_a_credentials_word_is_no_secret(name: str) -> None:
    """GCS's ``credential_token_expiration`` or a ``partition_key`` made a valid source URI refused."""
    assert not is_secret_parameter(name)
    uri = f"gs://bucket/prefix?{name}=3600"
    assert not holds_credentials(uri) and redact_uri(uri) == uri


# Secrets that are one by their ending, whatever comes before it.
ENDINGS = [n for n in SECRET_PARAMETERS if n.lower() not in ("key", "sig")]
WORDS = ["key", "token", "secret", "credential", "password", "sig", "signature", "access_key"]


@given(
    prefix=st.from_regex(r"[A-Za-z0-9]{0,8}", fullmatch=True),
    separator=st.sampled_from(["", "_", "-", "."]),
    secret=st.sampled_from(ENDINGS),
)
def test_a_name_ending_in_a_credential_is_a_secret(prefix: str, separator: str, secret: str) -> None:
    name = f"{prefix}{separator}{secret}"
    assert is_secret_parameter(name)
    assert (
        holds_credentials(f"gs://bucket/p?{name}=v")
        and redact_uri(f"gs://bucket/p?{name}=v") == "gs://bucket/p"
    )


@given(
    word=st.sampled_from(WORDS),
    separator=st.sampled_from(["_", "-", "."]),
    rest=st.sampled_from(["expiration", "kind", "count", "type", "name", "location", "format", "version"]),
)
def test_a_name_with_a_credential_word_before_its_end_is_no_secret(
    word: str, separator: str, rest: str
) -> None:
    name = f"{word}{separator}{rest}"
    uri = f"s3://bucket/p?{name}=v&region=x"
    assert not is_secret_parameter(name) and not holds_credentials(uri) and redact_uri(uri) == uri


@given(user=st.text(alphabet=characters, max_size=12), password=secret_text)
def test_a_password_in_the_userinfo_is_still_refused(user: str, password: str) -> None:
    for scheme in ("s3", "gs", "abfss", "hdfs"):
        assert holds_credentials(f"{scheme}://{encoded(user)}:{encoded(password)}@host/p?region=x")


@given(
    scheme=st.sampled_from(["redis", "rediss", "postgresql", "http", "abfs"]),
    user=st.sampled_from(["", "default"]),
    head=st.text(alphabet="QXZJKW", min_size=6, max_size=10),
    mark=st.sampled_from("/#?"),
    tail=st.text(alphabet="QXZJKW", min_size=6, max_size=10),
)
def test_a_raw_slash_hash_or_question_mark_in_any_schemes_password_is_redacted(
    scheme: str, user: str, head: str, mark: str, tail: str
) -> None:
    """Not only on object stores: redis://default:ab/cd@host:6379/0 was returned as it is."""
    url = f"{scheme}://{user}:{head}{mark}{tail}@127.0.0.1:6379/0"  # the password starts with a letter
    assert redact_uri(url).endswith("127.0.0.1:6379/0")
    for shown in (redact_uri(url), redact_text(f"cannot open {url}", url)):
        assert head not in shown and tail not in shown, shown
