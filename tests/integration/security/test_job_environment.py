"""What a job inherits from the control plane, and what a read-only caller sees of a job's env.

A real ``python -m control_plane`` runs with auth on and the secrets an operator gives it (the admin and
read-only tokens, database and Redis URLs, cloud credentials) in its environment; a real job prints its
whole environment into its log, which the read-only token may read. Jobs used to start from the control
plane's whole environment, so that log handed the admin token to any read-only caller; ``Jobs/Get``
answered the job's ``spec.env`` values (a job's own secrets) in clear to the same caller."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.audit import AuditClient
from clients.sdk.auth import ChannelSecurity
from tests.integration.security.job_planes import PRINT_ENV, REPO, control_plane, jobs_client, printed_env

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-secret-job-env-0123"
READONLY_TOKEN = "reader-secret-job-env-4567"
REDIS_PASSWORD = "redis-pass-job-env-89"
AWS_SECRET = "aws-server-secret-key-job-env"
JOB_SECRET = "hf_job_secret_value_0001"
#: What a read-only caller gets in place of each env value (the documented marker).
REDACTED = "[redacted]"
#: The control plane's own secrets: none may reach a job that does not name it in its spec.
SERVER_SECRETS = (
    "AETHER_ADMIN_TOKEN",
    "AETHER_READONLY_TOKEN",
    "AETHER_DB_URL",
    "AETHER_REDIS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


@dataclass(frozen=True)
class Plane:
    address: str
    home: Path
    job_token_file: Path
    ca_file: Path


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    home = tmp_path / "home"
    job_token_file = tmp_path / "job-token"
    job_token_file.write_text(ADMIN_TOKEN)
    job_token_file.chmod(0o600)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not read by the control plane\n")
    env = {
        **os.environ,
        "AETHER_HOME": str(home),
        "AETHER_DB_URL": f"sqlite:///{tmp_path / 'aether.db'}",
        "AETHER_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
        "AETHER_ADMIN_TOKEN": ADMIN_TOKEN,
        "AETHER_READONLY_TOKEN": READONLY_TOKEN,
        "AWS_ACCESS_KEY_ID": "AKIASERVERKEYJOBENV",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        # What jobs are documented to inherit: the token they call back with (as a file, so that an
        # environment dump shows a path), the CA, the locale and the device settings.
        "AETHER_TOKEN_FILE": str(job_token_file),
        "AETHER_TLS_CA": str(ca_file),
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "JOBS_MUST_NOT_SEE_THIS": "unlisted",
    }
    env.pop("AETHER_TOKEN", None)
    with control_plane(env) as address:
        yield Plane(address, home, job_token_file, ca_file)


def test_a_job_gets_the_allow_listed_environment_and_none_of_the_servers_secrets(plane: Plane) -> None:
    spec = {
        "name": "envprobe",
        "entrypoint": {"command": [sys.executable, "-c", PRINT_ENV]},
        # A job that needs a cloud credential names it in its own spec.
        "env": {"HF_TOKEN": JOB_SECRET, "AWS_ACCESS_KEY_ID": "AKIAJOBOWNKEY"},
    }
    with jobs_client(plane.address, ADMIN_TOKEN) as admin:
        job = admin.wait(admin.submit(spec).job_id, timeout=60)
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
        # The job's log, which only a caller that may write reads (test_job_tokens): a job's secret printed
        # there is no more than its submitter gave it, never the control plane's.
        log = b"".join(admin.logs(job.job_id)).decode()

    for secret in (ADMIN_TOKEN, READONLY_TOKEN, REDIS_PASSWORD, AWS_SECRET):
        assert secret not in log
    printed = printed_env(log)
    leaked = sorted(name for name in (*SERVER_SECRETS, "JOBS_MUST_NOT_SEE_THIS") if name in printed)
    assert leaked == ["AWS_ACCESS_KEY_ID"]  # the job's own, from its spec
    assert printed["AWS_ACCESS_KEY_ID"] == "AKIAJOBOWNKEY"
    assert printed["HF_TOKEN"] == JOB_SECRET
    # Auth is on: the job calls back with a token of its own (test_job_tokens), not the inherited one.
    assert Path(printed["AETHER_TOKEN_FILE"]).parent.name == job.job_id
    assert printed["AETHER_TLS_CA"] == str(plane.ca_file)
    assert printed["AETHER_HOME"] == str(plane.home)
    assert (printed["LANG"], printed["LC_TIME"]) == ("C.UTF-8", "C")
    assert printed["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert printed["PATH"] == os.environ["PATH"]
    assert printed["AETHER_JOB_ID"] == job.job_id
    assert printed["AETHER_CONTROL_PLANE_ADDR"] == plane.address
    assert str(REPO) in printed["PYTHONPATH"].split(os.pathsep)


def test_a_read_only_caller_sees_a_jobs_env_names_but_not_its_values(plane: Plane) -> None:
    # A dozen entries: replacing values in a protobuf map while iterating it skipped some of them, in
    # about one process of seven with two entries and in nearly every one with twelve.
    env = {"HF_TOKEN": JOB_SECRET, "MODE": "fast", **{f"SETTING_{n}": f"value-{n}" for n in range(10)}}
    spec = {"name": "secretive", "entrypoint": {"command": [sys.executable, "-c", "pass"]}, "env": env}
    with (
        jobs_client(plane.address, ADMIN_TOKEN) as admin,
        jobs_client(plane.address, READONLY_TOKEN) as reader,
    ):
        submitted = admin.submit(spec)
        assert dict(submitted.spec.env) == env
        ended = admin.wait(submitted.job_id, timeout=60)
        hidden = dict.fromkeys(env, REDACTED)
        assert dict(reader.get(submitted.job_id).spec.env) == hidden
        assert [dict(job.spec.env) for job in reader.list()] == [hidden]
        assert all(dict(job.spec.env) == hidden for job in reader.watch(submitted.job_id))
        # Everything else of the spec is still the reader's to see.
        assert reader.get(submitted.job_id).spec.entrypoint == ended.spec.entrypoint
        # The admin submitted the values and may read them back (to resubmit the spec, say).
        assert dict(admin.get(submitted.job_id).spec.env) == env
        assert dict(admin.list()[0].spec.env)["HF_TOKEN"] == JOB_SECRET
    # Nor does the audit log, which the read-only token reads too, keep them.
    with AuditClient(plane.address, security=ChannelSecurity(token=READONLY_TOKEN)) as audit:
        entries = list(audit.entries())
    assert entries and not any(JOB_SECRET in str(entry) for entry in entries)
