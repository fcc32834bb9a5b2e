"""Which control-plane flags hold a password (``control_plane.__main__.secret_flag``): with a job user
set, such a flag stops the start, since any local user reads a command line in ``/proc``. A password is
found as the database and Redis clients will read it, whatever characters it holds."""

from __future__ import annotations

import argparse

import pytest
from sqlalchemy.engine import make_url

from control_plane.__main__ import secret_flag


def flags(
    db_url: str = "", redis_url: str = "", kafka: list[tuple[str, str]] | None = None
) -> argparse.Namespace:
    return argparse.Namespace(db_url=db_url, redis_url=redis_url, kafka_option=kafka or [])


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://aether:S3cret@db:5432/aether",
        "postgresql+psycopg://aether:s3cr/et@db/aether",  # urlsplit ends the host part at the first /
        "postgresql+psycopg://aether:/s3cret@db/aether",
        "postgresql+psycopg://aether:s3?cret@db/aether",
        "postgresql+psycopg://aether:#s3cret@db/aether",
        "postgresql+psycopg://aether@db/aether?password=S3cret",
    ],
)
def test_a_database_password_is_found_whatever_it_holds(url: str) -> None:
    if "?password=" not in url:
        assert make_url(url).password  # what the database client will send: a password it is
    assert secret_flag(flags(db_url=url)) == "--db-url"


@pytest.mark.parametrize("url", ["redis://:S3cret@cache:6379/0", "rediss://user:s3/cr#et@cache/0"])
def test_a_redis_password_is_found(url: str) -> None:
    assert secret_flag(flags(redis_url=url)) == "--redis-url"


def test_urls_without_a_password_and_other_kafka_options_pass() -> None:
    plain = flags(
        db_url="postgresql+psycopg://aether@db:5432/aether",
        redis_url="redis://cache:6379/0",
        kafka=[("bootstrap.servers", "k:9092")],
    )
    assert secret_flag(plain) is None
    assert secret_flag(flags(db_url="sqlite:////var/lib/aether/aether.db")) is None
    assert secret_flag(flags(kafka=[("sasl.password", "x")])) == "--kafka-option sasl.password"
