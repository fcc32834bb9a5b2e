"""Settings of the jobs service and its supervisor, read once from ``AETHER_*`` variables.

* ``AETHER_JOBS_DIR``: where each job's folder (spec, log, checkpoints, exit records) lives; default
  ``$AETHER_HOME/jobs``.
* ``AETHER_JOBS_POLICY``: ``strict`` (default) or ``backfill`` (see ``scheduler.py`` for the trade-off).
* ``AETHER_JOBS_TICK_S``: how often the supervisor looks at its jobs when nothing wakes it (default 0.5).
* ``AETHER_JOBS_KILL_GRACE_S``: seconds between SIGTERM and SIGKILL on cancel or timeout (default 10).
* ``AETHER_JOBS_LEASE_S``: the leader lease of the supervisors sharing the database (``lease.py``): how
  long a supervisor that stopped renewing (crashed, hung) keeps the others from acting (default 15).
  ``AETHER_JOBS_LEASE_RENEW_S``: how often the leader renews it (default a third of the lease; less than
  the lease).
* ``AETHER_JOBS_START_GIVE_UP_S``: how long a job's start may fail on every try, before the job is
  RUNNING (its folder gone, a full disk), before the job ends FAILED (default 600; ``admission.py``);
  time it waits for a device or a uid in between does not count.
* ``AETHER_GPUS``: the device pool (see ``pool.py``).
* ``AETHER_JOB_USER``: the OS user (a name or a uid) jobs run as; unset = the control plane's own.
  ``AETHER_JOB_GROUP`` (a name or a gid): their group, default the user's primary group. See
  ``job_user.py`` for what that contains and what the control plane needs for it (root, or the
  capabilities to switch users): without it the setting is a configuration error, never ignored.
* ``AETHER_JOB_UID_RANGE`` (``FIRST-LAST``): instead of ``AETHER_JOB_USER``, each running attempt gets a
  uid of its own from the range (``uid_range.py``), its group ``AETHER_JOB_GROUP`` or else that uid: a
  range holding an existing user's uid, or without ``AETHER_JOB_GROUP`` an existing group's gid, is refused.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clients.env_values import ConfigurationError, env_float
from control_plane.jobs.job_user import JOBS_FOLDER_MODE, JobUser, blocked_for, missing_capabilities
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.scheduler import Policy
from control_plane.jobs.uid_range import JOB_UID_RANGE_VARIABLE, MAX_UID, JobUidRange


@dataclass(frozen=True)
class JobsSettings:
    folder: Path
    pool: DevicePool = field(default_factory=lambda: DevicePool((), "none"))
    policy: Policy = Policy.STRICT
    tick_s: float = 0.5
    kill_grace_s: float = 10.0
    #: How often the supervisor looks for runs of ended jobs left RUNNING (besides at start and after a
    #: failure of its own): another process's end of a job (a cancel through the API, another control
    #: plane) may have failed to end the job's run.
    run_sweep_s: float = 30.0
    #: The supervisors' leader lease (lease.py): how long it lasts unrenewed, and how often its holder
    #: renews it (less than lease_s).
    lease_s: float = 15.0
    lease_renew_s: float = 5.0
    #: How long a job's start may fail on every try before it is RUNNING (the error raised before its
    #: attempt: its folder gone, a full disk) before the job ends FAILED. Its place in the strict queue
    #: holds the jobs behind it back (admission.py), so a start that fails for good must end somewhere.
    start_give_up_s: float = 600.0
    #: Jobs behind a blocked head examined per step in backfill mode.
    backfill_depth: int = 64
    #: The address jobs get as AETHER_CONTROL_PLANE_ADDR; None = the control plane's own.
    control_plane_addr: str | None = None
    #: The working folder of job processes; None = the control plane's.
    job_cwd: Path | None = None
    #: The OS user jobs run as (AETHER_JOB_USER, AETHER_JOB_GROUP); None = the control plane's own.
    job_user: JobUser | None = None
    #: The uids attempts run as, one each (AETHER_JOB_UID_RANGE); None = job_user (or the control plane).
    job_uid_range: JobUidRange | None = None

    @classmethod
    def from_env(cls, home: Path, environ: Mapping[str, str] | None = None) -> JobsSettings:
        env = os.environ if environ is None else environ
        policy_text = env.get("AETHER_JOBS_POLICY") or Policy.STRICT.value
        try:
            policy = Policy(policy_text)
        except ValueError:
            # A setting to fix (one line, exit 2), not an API error (InvalidArgument exited 1).
            raise ConfigurationError(
                f"AETHER_JOBS_POLICY={policy_text!r}: expected strict or backfill"
            ) from None
        lease_s = env_float(env, "AETHER_JOBS_LEASE_S", 15.0, above=0.0)
        lease_renew_s = env_float(env, "AETHER_JOBS_LEASE_RENEW_S", lease_s / 3, above=0.0)
        if lease_renew_s >= lease_s:
            raise ConfigurationError(
                f"AETHER_JOBS_LEASE_RENEW_S={lease_renew_s:g} is not below AETHER_JOBS_LEASE_S={lease_s:g}:"
                " the lease would expire before its holder renews it"
            )
        return cls(
            folder=Path(env.get("AETHER_JOBS_DIR") or home / "jobs").expanduser(),
            pool=DevicePool.detect(env),
            policy=policy,
            tick_s=env_float(env, "AETHER_JOBS_TICK_S", 0.5, above=0.0),
            kill_grace_s=env_float(env, "AETHER_JOBS_KILL_GRACE_S", 10.0, minimum=0.0),
            run_sweep_s=env_float(env, "AETHER_JOBS_RUN_SWEEP_S", 30.0, above=0.0),
            lease_s=lease_s,
            lease_renew_s=lease_renew_s,
            start_give_up_s=env_float(env, "AETHER_JOBS_START_GIVE_UP_S", 600.0, minimum=0.0),
            job_user=job_user_from_env(env),
            job_uid_range=job_uid_range_from_env(env),
        )


JOB_USER_VARIABLE = "AETHER_JOB_USER"
JOB_GROUP_VARIABLE = "AETHER_JOB_GROUP"


def job_user_from_env(environ: Mapping[str, str] | None = None) -> JobUser | None:
    """The job user ``AETHER_JOB_USER`` names (``AETHER_JOB_GROUP`` its group), None when unset. A
    ``ConfigurationError`` naming the variable for a user or group that does not exist, for root or the
    control plane's own user (they contain nothing), and when this process may not switch users: jobs
    are then never run as the control plane instead."""
    env = os.environ if environ is None else environ
    text = (env.get(JOB_USER_VARIABLE) or "").strip()
    if not text:
        if (env.get(JOB_GROUP_VARIABLE) or "").strip() and not (
            env.get(JOB_UID_RANGE_VARIABLE) or ""
        ).strip():
            raise ConfigurationError(
                f"{JOB_GROUP_VARIABLE} is set without {JOB_USER_VARIABLE} or {JOB_UID_RANGE_VARIABLE}"
            )
        return None
    if (env.get(JOB_UID_RANGE_VARIABLE) or "").strip():
        raise ConfigurationError(
            f"{JOB_USER_VARIABLE} and {JOB_UID_RANGE_VARIABLE} are both set: jobs run either as one job user"
            " or each as a uid of the range; set one of them"
        )
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except (KeyError, OverflowError):
        raise ConfigurationError(f"{JOB_USER_VARIABLE}={text!r}: no such user") from None
    gid = _job_group(env)
    user = JobUser(entry.pw_name, entry.pw_uid, entry.pw_gid if gid is None else gid, entry.pw_dir)
    if user.uid in (0, os.geteuid()):
        whose = "root's" if user.uid == 0 else "the control plane's own"
        raise ConfigurationError(
            f"{JOB_USER_VARIABLE}={text!r}: uid {user.uid} is {whose}: jobs would run with the control"
            " plane's access; name an unprivileged user of their own"
        )
    _check_may_switch(f"{JOB_USER_VARIABLE}={text!r}")
    return user


def _job_group(env: Mapping[str, str]) -> int | None:
    """The gid ``AETHER_JOB_GROUP`` names, None when unset."""
    group_text = (env.get(JOB_GROUP_VARIABLE) or "").strip()
    if not group_text:
        return None
    try:
        return (
            grp.getgrgid(int(group_text)).gr_gid if group_text.isdigit() else grp.getgrnam(group_text).gr_gid
        )
    except (KeyError, OverflowError):
        raise ConfigurationError(f"{JOB_GROUP_VARIABLE}={group_text!r}: no such group") from None


def _check_may_switch(setting: str) -> None:
    if missing := missing_capabilities():
        raise ConfigurationError(
            f"{setting}: the control plane (uid {os.geteuid()}) may not run jobs as another user: run it"
            f" as root, or with {', '.join(missing)}"
        )


def job_uid_range_from_env(environ: Mapping[str, str] | None = None) -> JobUidRange | None:
    """The range ``AETHER_JOB_UID_RANGE`` names (``FIRST-LAST``; ``AETHER_JOB_GROUP`` its group), None when
    unset. A ``ConfigurationError`` naming the variable for a malformed or inverted range, one holding
    root's uid or the control plane's own (a job so run contains nothing), or an existing user's uid, or,
    without ``AETHER_JOB_GROUP``, an existing group's gid (each uid is then its job's gid), one with
    ``AETHER_JOB_USER`` set too, and when this process may not switch users."""
    env = os.environ if environ is None else environ
    text = (env.get(JOB_UID_RANGE_VARIABLE) or "").strip()
    if not text:
        return None
    setting = f"{JOB_UID_RANGE_VARIABLE}={text!r}"
    if (env.get(JOB_USER_VARIABLE) or "").strip():
        raise ConfigurationError(
            f"{JOB_USER_VARIABLE} and {JOB_UID_RANGE_VARIABLE} are both set: jobs run either as one job user"
            " or each as a uid of the range; set one of them"
        )
    first_text, dash, last_text = (part.strip() for part in text.partition("-"))
    if not (dash and first_text.isdigit() and last_text.isdigit()):
        raise ConfigurationError(f"{setting}: expected FIRST-LAST, two uids (e.g. 200000-200099)")
    first, last = int(first_text), int(last_text)
    if first > last:
        raise ConfigurationError(f"{setting}: the first uid is above the last")
    if last > MAX_UID:
        raise ConfigurationError(f"{setting}: a uid is at most {MAX_UID}")
    for uid, whose in ((0, "root's"), (os.geteuid(), "the control plane's own")):
        if first <= uid <= last:
            raise ConfigurationError(
                f"{setting}: the range holds uid {uid}, {whose}: jobs would run with the control plane's"
                " access; give uids that nobody else uses"
            )
    # A job run as a user's uid reads and writes whatever that user owns (its home, its keys).
    if user := next((entry for entry in pwd.getpwall() if first <= entry.pw_uid <= last), None):
        raise ConfigurationError(
            f"{setting}: the range holds uid {user.pw_uid}, user {user.pw_name}'s: a job run as it could"
            " read and change that user's files; give uids that nobody else uses"
        )
    gid = _job_group(env)
    # Without AETHER_JOB_GROUP each uid is also its job's gid: one that names a group (a service's, as
    # redis's) would give the job that group's files, though no user has the uid.
    if gid is None and (group := next((g for g in grp.getgrall() if first <= g.gr_gid <= last), None)):
        raise ConfigurationError(
            f"{setting}: the range holds gid {group.gr_gid}, group {group.gr_name}'s, which a job run as"
            f" that uid would have as its group; give uids that no group has, or set {JOB_GROUP_VARIABLE}"
        )
    uid_range = JobUidRange(first, last, gid)
    _check_may_switch(setting)
    return uid_range


def open_jobs_folder(folder: Path, user: JobUser, setting: str | None = None) -> None:
    """Makes the jobs folder ``0711`` (a job user enters its own job's folder in it; nobody else lists
    it) and checks that ``user`` may enter every folder above it: a ``ConfigurationError`` naming the
    first that it may not (those are the operator's, and keep the mode they were given), and
    ``setting`` (default: ``AETHER_JOB_USER``'s)."""
    os.chmod(folder, JOBS_FOLDER_MODE)
    if problem := blocked_for(folder / "job", user.uid, user.gid, read=False):
        raise ConfigurationError(
            f"{setting or f'{JOB_USER_VARIABLE}={user.name!r}'}: the job user cannot reach the jobs folder"
            f" {folder}: {problem}; let it through (chmod o+x) or set AETHER_JOBS_DIR under a folder it may"
            " enter"
        )
