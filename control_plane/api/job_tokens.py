"""Job tokens: the narrow writing credential a training job calls the control plane back with.

A job reports metrics, artifacts and its model version to the control plane. Before job tokens that
took a token allowed to write, and the only one was the admin token, so every job (and whatever code it
ran) held full admin power. With auth on, the supervisor now gives each job a token of its own
(:meth:`JobTokens.mint`), written 0600 into the job's private folder and named by ``AETHER_TOKEN_FILE``
(a job that prints its environment shows a path, not the token). The token bounds what a token that
*leaks* (a log, a printed environment, a copied file) can do; it does not contain hostile job code: by
default a job runs as the control plane's user and can read the admin token's file, other jobs' token
files and the SQLite database (see ``control_plane.process_secrets``: the control plane keeps its tokens
out of what ``/proc`` shows of it, no more). ``AETHER_JOB_USER`` runs jobs as another OS user
(``control_plane.jobs.job_user``): the token file is then handed to that user (0600) in a folder only the
job's group may enter while it runs, and the admin token's file, the database and other jobs' folders are
out of its reach; jobs running at the same time as the same job user can still read each other's tokens.
A job token looks like:

    aether-job.<job id>.<run id>.<HMAC-SHA256 of "<job id>.<run id>", base64url>

The key is derived from the admin token (HMAC of a fixed label: the admin token cannot be recovered
from it), so nothing is stored, a restarted control plane re-adopting a job accepts the token it was
started with, and rotating the admin token revokes every job token with it. Such a token's principal is
``job:<job id>``; it may

* call every read method (as the read-only token: a job's ``spec.env`` values and job logs stay hidden
  from it, see :mod:`control_plane.api.jobs`);
* call the writes in :data:`JOB_WRITES` only, and only for its own run: each request message (each
  message of a stream, as the servicer takes it) must name the token's run in every run field, else
  PERMISSION_DENIED. ``Artifacts/Upload`` adds a content-addressed blob and names no run;
  ``ModelRegistry/CreateModelVersion`` registers the job's model version (with ``create_model``, the
  model too) as its run's output: approving it, moving aliases, deploying and deleting stay the admin's.

Any other write (a feature view, a deployment, submitting or cancelling jobs, approvals, the monitor
config) is PERMISSION_DENIED.

Once its run has ended (the control plane ends it FINISHED, FAILED or KILLED from how the job ended, see
``control_plane.jobs.runs``), every write of :data:`JOB_WRITES` sent with the token is refused with
FAILED_PRECONDITION (:class:`control_plane.tracking.records.RunEnded`: the run's state refuses it, not
the token's scope, which is what PERMISSION_DENIED says), naming the job and the run and saying it has
ended, and nothing of the request is written. ``LogBatch``, ``LogArtifact`` and ``CreateModelVersion``
check the run's status on its row as their own write transaction reads (and locks) it, so a write racing
the run's end is either wholly in before the end or wholly refused; ``Artifacts/Upload`` names no run and
checks the token's run before it stores anything (an upload under way when the run ends may finish, but
the blob it adds is named by nothing: naming it is one of the refused writes). A retry of a ``LogBatch``
written before the end is answered as already applied (nothing is written again). Reads with the token
still answer. So the token, as long-lived as the admin token it is derived from, writes nothing once its
job has ended: a leaked token can still read what the read-only token reads. The window left is between
the job's end and its run's (two transactions, normally milliseconds apart; a run whose end failed is
ended by the supervisor's sweep within ``JobsSettings.run_sweep_s``): a write there lands before the
run's end, as one made while the job ran.

Each refused write of a job token (PERMISSION_DENIED for what is outside its scope, FAILED_PRECONDITION
for its ended run) is in the audit log: actor ``job:<id>``, filed under the job (a model registry write
under its model), the method and the reason in its outcome (:mod:`control_plane.api.refusals`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from control_plane.api.identity import JOB_PRINCIPAL_PREFIX

__all__ = [
    "JOB_PRINCIPAL_PREFIX",
    "JOB_TOKEN_PREFIX",
    "JOB_WRITES",
    "JobScope",
    "JobTokens",
    "job_run_refusal",
]

JOB_TOKEN_PREFIX = "aether-job."

_LABEL = b"aether job token v1"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _runs_of_batch(message: Any) -> list[str]:
    return [batch.run_id for batch in message.runs]


def _run_of(message: Any) -> list[str]:
    return [message.run_id]


#: The writes a job token may make, each with the run ids a request message names (empty: it names no run).
JOB_WRITES: Mapping[str, Callable[[Any], list[str]]] = MappingProxyType(
    {
        "/aether.v1.Tracking/LogBatch": _runs_of_batch,
        "/aether.v1.Tracking/LogArtifact": _run_of,
        "/aether.v1.Artifacts/Upload": lambda message: [],
        "/aether.v1.ModelRegistry/CreateModelVersion": _run_of,
    }
)


@dataclass(frozen=True)
class JobScope:
    """What a valid job token stands for: the job and its tracking run."""

    job_id: str
    run_id: str

    @property
    def principal(self) -> str:
        return f"{JOB_PRINCIPAL_PREFIX}{self.job_id}"


class JobTokens:
    """Mints and checks job tokens under a key derived from the admin token."""

    def __init__(self, admin_token: str) -> None:
        if not admin_token:
            raise ValueError("job tokens need the admin token to derive their key from")
        self._key = hmac.new(admin_token.encode("utf-8"), _LABEL, hashlib.sha256).digest()

    def __repr__(self) -> str:  # never print the key
        return "JobTokens()"

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def mint(self, job_id: str, run_id: str) -> str:
        """The token of ``job_id`` writing to ``run_id``."""
        if not (_ID.fullmatch(job_id) and _ID.fullmatch(run_id)):
            raise ValueError(f"cannot mint a job token for job {job_id!r}, run {run_id!r}")
        body = f"{job_id}.{run_id}"
        return f"{JOB_TOKEN_PREFIX}{body}.{self._mac(body)}"

    def verify(self, token: str | None) -> JobScope | None:
        """The scope of ``token`` when it is a job token this key minted, else None (compared in
        constant time)."""
        if not token or not token.startswith(JOB_TOKEN_PREFIX):
            return None
        parts = token[len(JOB_TOKEN_PREFIX) :].split(".")
        if len(parts) != 3 or not all(_ID.fullmatch(part) for part in parts[:2]) or not parts[2].isascii():
            return None
        job_id, run_id, mac = parts
        if not hmac.compare_digest(mac.encode("ascii"), self._mac(f"{job_id}.{run_id}").encode("ascii")):
            return None
        return JobScope(job_id, run_id)


def job_run_refusal(scope: JobScope, method: str, message: Any) -> str | None:
    """Why ``scope``'s token may not send ``message`` to ``method`` (one of :data:`JOB_WRITES`), or None."""
    runs = JOB_WRITES[method](message)
    strangers = sorted({run for run in runs if run != scope.run_id})
    if not strangers:
        return None
    return (
        f"the {scope.principal} token may write only its own run {scope.run_id}, not {strangers[0]!r}"
        f" on {method}"
    )
