"""Jobs run as another OS user (``AETHER_JOB_USER``, ``control_plane/jobs/job_user.py``): a real control
plane (auth on, the jobs and tracking services) runs real jobs as ``nobody``, which report from inside
who they ran as and what they could open; and the configuration errors of the setting.

Running a job as ``nobody`` needs root, and an interpreter, packages and a repository that ``nobody``
may reach (judged by the mode bits of every folder on the way). Where the virtual environment's
interpreter lies under a folder closed to others (``/root/.pyenv``, reached through ``/root``, 0700),
the jobs run on the system's interpreter of the same version, with the environment's packages on
``PYTHONPATH``; where neither is reachable the tests skip, saying why."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import json_format

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.auth import ChannelSecurity
from clients.sdk.jobs import JobsClient
from clients.sdk.tracking import TrackingClient
from control_plane.__main__ import parse_settings
from control_plane.api import jobs as jobs_api
from control_plane.api import tracking as tracking_api
from control_plane.api.auth import AuthSettings
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.job_user import JobUser, blocked_for
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.settings import JobsSettings, job_user_from_env
from control_plane.jobs.uid_range import JobUidRange
from control_plane.server import ControlPlaneServer, start_server
from control_plane.settings import ControlPlaneSettings
from tests.integration.jobs.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-secret-job-user-0123456789"
PROBE = "tests.integration.jobs.programs.job_user_probe"


@dataclass(frozen=True)
class Setup:
    user: JobUser
    python: str
    #: PYTHONPATH entries the jobs need besides the repository (the environment's packages, for the
    #: system's interpreter).
    path: tuple[str, ...]


def nobody_setup() -> Setup:
    """``nobody`` and an interpreter it may run, or a skip saying why there is none."""
    if os.geteuid() != 0:
        pytest.skip(f"running a job as nobody needs root; the tests run as uid {os.geteuid()}")
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this host has no user nobody")
    return job_user_setup(JobUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir))


def job_user_setup(user: JobUser) -> Setup:
    """An interpreter ``user`` may run, or a skip saying why there is none."""
    who = user.name
    problem = blocked_for(
        REPO_ROOT / "tests" / "integration" / "jobs" / "programs" / "job_user_probe.py", user.uid, user.gid
    )
    if problem:
        pytest.skip(f"{who} cannot read the repository: {problem}")
    own = _reachable(sys.executable, user)
    if own is None:
        return Setup(user, sys.executable, ())
    system = shutil.which(
        f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/usr/local/bin"
    )
    packages = sysconfig.get_paths()["purelib"]
    if system is None or _reachable(system, user) is not None:
        pytest.skip(f"{who} cannot run this interpreter ({own}) and there is no system python of its version")
    if problem := blocked_for(Path(packages) / "grpc" / "__init__.py", user.uid, user.gid):
        pytest.skip(f"{who} cannot run this interpreter ({own}) nor read its packages: {problem}")
    return Setup(user, system, (packages,))


def _reachable(python: str, user: JobUser) -> str | None:
    for path in (Path(python), Path(os.path.realpath(python))):
        if problem := blocked_for(path, user.uid, user.gid):
            return problem
    return None


class Plane:
    """A control plane (auth on; jobs and tracking) on its own loop in a thread, its jobs run by the
    setup's user, or each by a uid of ``uid_range``."""

    def __init__(self, home: Path, setup: Setup, uid_range: JobUidRange | None = None) -> None:
        self.home = home
        settings = ControlPlaneSettings(
            home=home, db_url=f"sqlite:///{home / 'aether.db'}", listen_addr="127.0.0.1:0",
            shutdown_grace_s=0.5, auth=AuthSettings(admin_token=ADMIN_TOKEN),
        )  # fmt: skip
        jobs = JobsSettings(
            folder=home / "jobs", pool=DevicePool.from_config("0"), tick_s=0.1, kill_grace_s=1.0,
            job_cwd=REPO_ROOT, job_user=None if uid_range else setup.user, job_uid_range=uid_range,
        )  # fmt: skip
        base_env = dict(os.environ)
        base_env["PYTHONPATH"] = os.pathsep.join((str(REPO_ROOT), *setup.path))
        executor = LocalExecutor(python=setup.python, cwd=REPO_ROOT, base_env=base_env, kill_grace_s=1.0)
        services = [tracking_api.add_to_server, jobs_api.service_module(jobs, executor)]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        started = start_server(settings, services=services)
        self.server: ControlPlaneServer = asyncio.run_coroutine_threadsafe(started, self._loop).result(60)
        self.address = self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


def test_a_job_runs_as_the_job_user_and_cannot_read_the_control_planes_secrets(reachable_home: Path) -> None:
    setup = nobody_setup()
    if problem := blocked_for(reachable_home / "home", setup.user.uid, setup.user.gid, read=False):
        pytest.skip(f"nobody cannot enter the temporary folder: {problem}")
    home = reachable_home / "home"
    home.mkdir(mode=0o711)
    admin_token_file = home / "admin-token"
    admin_token_file.write_text(ADMIN_TOKEN)
    admin_token_file.chmod(0o600)
    plane = Plane(home, setup)
    security = ChannelSecurity(token=ADMIN_TOKEN)
    try:
        with JobsClient(plane.address, security=security) as jobs:
            # A job before it: its folder, token and checkpoints are not the probe's to read.
            other = jobs.wait(jobs.submit(_spec("other")).job_id, timeout=120)
            assert other.state == pb.JOB_STATE_SUCCEEDED, b"".join(jobs.logs(other.job_id)).decode()
            other_folder = Path(other.log_path).parent
            tries = {
                "admin_token": admin_token_file,
                "database": home / "aether.db",
                "jobs_folder": home / "jobs",
                "other_job_folder": other_folder,
                "other_job_token": other_folder / "token",
                "other_job_checkpoints": Path(other.checkpoint_dir),
            }
            done = jobs.wait(jobs.submit(_spec("probe", tries)).job_id, timeout=120)
            log = b"".join(jobs.logs(done.job_id)).decode()
        assert done.state == pb.JOB_STATE_SUCCEEDED, log
        outputs = json_format.MessageToDict(done.outputs)
        # Who it ran as: nobody's uid and group, no group of the control plane's.
        user = setup.user
        assert (outputs["uid"], outputs["gid"], outputs["groups"]) == (user.uid, user.gid, []), outputs
        assert outputs["home"] == user.home
        # What it could not open (read as root, each would have been "read").
        assert outputs["tried"] == {name: "PermissionError" for name in tries}, outputs["tried"]
        # Its own checkpoint, in the work folder it owns; its metric reached its run with its own token.
        checkpoint = Path(outputs["checkpoint"])
        assert checkpoint.is_file() and checkpoint.is_relative_to(Path(done.checkpoint_dir))
        assert checkpoint.stat().st_uid == user.uid
        with TrackingClient(plane.address, security=security) as tracking:
            assert list(tracking.metric_history(done.run_id, "loss").values) == [0.25]
        # Ended: its folder is closed to the job user again; the control plane's files stay its own.
        folder = Path(done.log_path).parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
        assert Path(done.log_path).stat().st_uid == os.getuid()
    finally:
        plane.stop()


def test_a_job_whose_code_the_job_user_cannot_read_fails_saying_so(reachable_home: Path) -> None:
    setup = nobody_setup()
    home = reachable_home / "home"
    home.mkdir(mode=0o711)
    private = reachable_home / "private"  # the control plane's alone
    private.mkdir(mode=0o700)
    (private / "hidden_job.py").write_text("print('ran')\n")
    plane = Plane(home, setup)
    try:
        spec = {
            "name": "hidden",
            "entrypoint": {"module": "hidden_job"},
            "env": {"PYTHONPATH": os.pathsep.join((str(private), *setup.path))},
            "max_retries": 2,
        }
        with JobsClient(plane.address, security=ChannelSecurity(token=ADMIN_TOKEN)) as jobs:
            done = jobs.wait(jobs.submit(spec).job_id, timeout=60)
            log = b"".join(jobs.logs(done.job_id)).decode()
    finally:
        plane.stop()
    assert done.state == pb.JOB_STATE_FAILED and done.attempt == 1, log  # not retried: no retry helps
    hidden = private / "hidden_job.py"
    expected = f"the job user nobody (uid {setup.user.uid}) cannot read {hidden}: it may not enter {private}"
    assert expected in done.reason, done.reason
    assert "needs read access to the interpreter (or virtual environment) and to the job's code" in log
    assert "ran" not in log.replace("[aether]", "")


def _spec(name: str, tries: dict[str, Path] | None = None) -> dict[str, object]:
    args = [f"--try={key}={path}" for key, path in (tries or {}).items()]
    return {"name": name, "entrypoint": {"module": PROBE, "args": args}}


# Configuration errors -------------------------------------------------------------------------------


def test_an_unknown_job_user_stops_the_control_plane_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "AETHER_HOME": str(tmp_path / "home"), "AETHER_JOB_USER": "no-such-user-aether"}
    db_url = f"sqlite:///{tmp_path / 'm.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0", "--db-url", db_url],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout, "Traceback" in done.stderr) == (2, "", False), done.stderr
    assert done.stderr.splitlines()[-1] == (
        "python -m control_plane: error: AETHER_JOB_USER='no-such-user-aether': no such user"
    )
    # The flag is read the same way, and names the variable it overrides.
    flagged = subprocess.run(
        [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0", "--job-user", "nobody",
         "--job-group", "no-such-group-aether", "--db-url", f"sqlite:///{tmp_path / 'm.db'}"],
        cwd=REPO_ROOT, env={**env, "AETHER_JOB_USER": ""}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert flagged.returncode == 2, flagged.stderr
    assert flagged.stderr.splitlines()[-1] == (
        "python -m control_plane: error: AETHER_JOB_GROUP='no-such-group-aether': no such group"
    )


def test_a_password_in_a_flag_is_refused_with_a_job_user(tmp_path: Path) -> None:
    """Any local user, the job user included, reads a process's command line (/proc/PID/cmdline), not
    its environment: with a job user, a password in --db-url, --redis-url or --kafka-option stops the
    start with one line pointing at the variable (which the control plane withdraws)."""
    if os.geteuid() != 0:
        pytest.skip(f"a job user needs root; the tests run as uid {os.geteuid()}")
    env = {**os.environ, "AETHER_HOME": str(tmp_path / "home"), "AETHER_JOB_USER": "nobody"}
    sqlite = f"sqlite:///{tmp_path / 'm.db'}"
    cases = {
        "--db-url": ["--db-url", "postgresql+psycopg://aether:S3cretPw@127.0.0.1:1/aether"],
        "--redis-url": ["--db-url", sqlite, "--redis-url", "redis://:S3cretPw@127.0.0.1:1/0"],
        "--kafka-option sasl.password": ["--db-url", sqlite, "--kafka-option", "sasl.password=S3cretPw"],
    }
    variables = {"--db-url": "AETHER_DB_URL", "--redis-url": "AETHER_REDIS_URL"}
    for flag, flags in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0", *flags],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (done.returncode, done.stdout, "Traceback" in done.stderr) == (2, "", False), done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith(f"python -m control_plane: error: {flag} holds a password"), last
        assert last.endswith(f"give it in {variables.get(flag, 'AETHER_KAFKA_OPTIONS_FILE')} instead"), last
        assert "S3cretPw" not in done.stderr
    # Without a password in a flag, or without a job user, the flags are taken as before.
    home = {"AETHER_HOME": str(tmp_path / "home")}
    plain = ["--db-url", sqlite, "--redis-url", "redis://127.0.0.1:1/0"]
    assert parse_settings(plain, {**home, "AETHER_JOB_USER": "nobody"}).redis_url == "redis://127.0.0.1:1/0"
    assert parse_settings(cases["--db-url"], home).db_url.endswith("aether:S3cretPw@127.0.0.1:1/aether")


def test_a_control_plane_that_may_not_switch_users_refuses_to_start(tmp_path: Path) -> None:
    """The entrypoint run in a process of ``nobody`` (forked from the test, root, which then gives up
    root: nobody may not run this interpreter where it lies under /root). It must refuse at once,
    never run jobs as itself."""
    if os.geteuid() != 0:
        pytest.skip(f"starting the control plane as nobody needs root; the tests run as uid {os.geteuid()}")
    nobody = pwd.getpwnam("nobody")
    target = next((e for e in pwd.getpwall() if e.pw_uid not in (0, nobody.pw_uid)), None)
    if target is None:
        pytest.skip("no user but root and nobody to name as the job user")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        code = 70
        try:
            os.close(read_end)
            signal.alarm(60)  # without the check the control plane would start and serve
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.dup2(write_end, 2)
            sys.stderr = os.fdopen(2, "w", encoding="utf-8")  # not pytest's capture
            os.environ.update(AETHER_HOME=str(tmp_path / "home"), AETHER_JOB_USER=target.pw_name)
            from control_plane.__main__ import main

            code = main(["--listen", "127.0.0.1:0", "--db-url", f"sqlite:///{tmp_path / 'm.db'}"])
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as stderr_pipe:
        stderr = stderr_pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 2, stderr
    last = stderr.splitlines()[-1]
    assert last.startswith(
        f"python -m control_plane: error: AETHER_JOB_USER={target.pw_name!r}: the control plane"
        f" (uid {nobody.pw_uid}) may not run jobs as another user: run it as root, or with CAP_CHOWN,"
    ), last
    assert "Traceback" not in stderr


def test_root_or_the_control_planes_own_user_is_refused_as_the_job_user() -> None:
    """They contain nothing: a job run as either reads what the control plane reads."""
    for value in ("root", "0", str(os.geteuid())):
        with pytest.raises(ValueError, match=rf"AETHER_JOB_USER={value!r}: uid \d+ is "):
            job_user_from_env({"AETHER_JOB_USER": value})
    assert job_user_from_env({}) is None
    with pytest.raises(ValueError, match="AETHER_JOB_GROUP is set without AETHER_JOB_USER"):
        job_user_from_env({"AETHER_JOB_GROUP": "nogroup"})


# The non-root setup -----------------------------------------------------------------------------------

CAPS = "cap_setuid,cap_setgid,cap_kill,cap_chown,cap_dac_override"
#: Run by a control plane of its own (capsh below): starts one job that reports its uid and capabilities.
DRIVER = """
import json, sys, time
from pathlib import Path
from clients.aether.v1 import jobs_pb2 as pb
from control_plane.jobs.executor import JobLaunch, LocalExecutor
from control_plane.jobs.files import JobFiles
from control_plane.jobs.job_user import missing_capabilities
from control_plane.jobs.settings import job_user_from_env

folder, job_user = Path(sys.argv[1]), sys.argv[2]
assert missing_capabilities() == [], missing_capabilities()
user = job_user_from_env({"AETHER_JOB_USER": job_user})
assert user is not None
spec = pb.JobSpec(name="caps")
spec.entrypoint.command.extend(["/bin/sh", "-c", "id -u; grep ^Cap /proc/self/status"])
files = JobFiles(folder)
files.open_log().close()
files.open_to(user)
handle = LocalExecutor(cwd=Path("/")).launch(JobLaunch("j", spec, files, user), 1, [], {})
deadline = time.monotonic() + 30
while (status := handle.poll()) is None and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"status": None if status is None else status.code, "log": files.log.read_text()}))
"""


def test_a_job_keeps_no_capability_of_a_control_plane_that_is_not_root(reachable_home: Path) -> None:
    """The documented non-root setup: the control plane as an ordinary user with CAP_SETUID, CAP_SETGID,
    CAP_KILL, CAP_CHOWN and CAP_DAC_OVERRIDE, ambient too (what systemd's AmbientCapabilities= gives),
    made here with capsh. A uid change between two non-zero uids clears no capability: the job, as
    nobody, must still have none (it could read the control plane's files, or become its user)."""
    if os.geteuid() != 0:
        pytest.skip(
            f"making a control plane with capabilities needs root; the tests run as uid {os.geteuid()}"
        )
    capsh = shutil.which("capsh")
    if capsh is None:
        pytest.skip("capsh is missing (apt package libcap2-bin)")
    nobody = pwd.getpwnam("nobody")
    plane_user = next((e for e in pwd.getpwall() if e.pw_uid not in (0, nobody.pw_uid)), None)
    if plane_user is None:
        pytest.skip("no user but root and nobody to run the control plane as")
    folder = reachable_home / "jobs" / "j"
    folder.mkdir(parents=True)
    for path in (reachable_home / "jobs", folder):
        os.chown(path, plane_user.pw_uid, plane_user.pw_gid)
    driver = reachable_home / "driver.py"
    driver.write_text(DRIVER)
    driver.chmod(0o644)
    command = shlex.join([sys.executable, str(driver), str(folder), nobody.pw_name])
    done = subprocess.run(
        [capsh, f"--caps={CAPS},cap_setpcap+eip", "--keep=1", f"--user={plane_user.pw_name}",
         f"--caps={CAPS}+eip", f"--addamb={CAPS}", "--", "-c", command],
        cwd="/", env={"PATH": os.defpath, "PYTHONPATH": str(REPO_ROOT), "HOME": "/"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    log: str = report["log"]
    assert report["status"] == 0, log
    lines = log.splitlines()
    assert lines[0] == str(nobody.pw_uid), log
    caps = dict(line.split(":\t") for line in lines[1:] if line.startswith("Cap"))
    held = {name: caps[name] for name in ("CapInh", "CapPrm", "CapEff", "CapAmb")}
    assert held == dict.fromkeys(held, "0000000000000000"), log
