"""A uid of its own for each running attempt (``AETHER_JOB_UID_RANGE``, ``control_plane/jobs/uid_range.py``):
a real control plane (auth on) runs real jobs at the same time, each as a uid of a range of two, which try
each other's token and work folder from inside; and the configuration errors of the setting.

Jobs run as one job user at the same time could read each other's token files and folders (job A could
write into job B's run with B's token). Running a job as another uid needs root (the tests skip
otherwise, saying why), as in ``test_job_user.py``, whose interpreter checks these tests share."""

from __future__ import annotations

import contextlib
import ctypes
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import json_format

from clients.aether.v1 import jobs_pb2 as pb
from clients.errors import FailedPrecondition
from clients.sdk.auth import ChannelSecurity
from clients.sdk.jobs import JobsClient
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.features.registry import FeatureRegistry
from control_plane.jobs.executor import LocalExecutor
from control_plane.jobs.pool import DevicePool
from control_plane.jobs.service import JobService
from control_plane.jobs.settings import JobsSettings, job_uid_range_from_env
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.supervisor import Supervisor
from control_plane.jobs.uid_range import JobUidRange, scans, uids_in_use
from control_plane.jobs.uid_sweep import sweep_uid
from control_plane.offline.store import OfflineStore
from tests.integration.jobs.conftest import REPO_ROOT, job_spec, process_alive, wait_for
from tests.integration.jobs.test_job_user import ADMIN_TOKEN, Plane, job_user_setup

pytestmark = pytest.mark.integration

PROBE = "tests.integration.jobs.programs.uid_probe"
#: Uids far above any a system hands out (useradd stops at 60000, systemd's dynamic users at 65519). Each
#: test runs its jobs as uids of its own (FIRST_UID + 20 * its number, and the next): tests run at once in
#: several pytest workers, and one test's sweep of a uid (or kill of everything of it) must never reach
#: another's jobs. ``tests/unit/jobs/test_reaper.py`` has FIRST_UID + 10.
FIRST_UID = 3_141_592_000


def _unused_range(test: int, size: int = 2) -> JobUidRange:
    """The ``size`` uids test number ``test`` runs jobs as, or a skip saying why they cannot."""
    if os.geteuid() != 0:
        pytest.skip(f"running jobs as other uids needs root; the tests run as uid {os.geteuid()}")
    first = FIRST_UID + 20 * test
    uid_range = JobUidRange(first, first + size - 1)
    users = {entry.pw_uid: entry.pw_name for entry in pwd.getpwall()}
    if taken := [f"{uid} ({users[uid]})" for uid in (uid_range.first, uid_range.last) if uid in users]:
        pytest.skip(f"uids of the range are users of this host: {', '.join(taken)}")
    if in_use := uids_in_use() & {uid_range.first, uid_range.last}:
        pytest.skip(f"processes run as uid {sorted(in_use)}")
    return uid_range


def _cancel_live_jobs(jobs: JobsClient) -> None:
    live = (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_RETRYING)
    for job in jobs.list(live):
        if not job.cancel_requested:
            with contextlib.suppress(FailedPrecondition):  # it ended meanwhile
                jobs.cancel(job.job_id, "test teardown")
    wait_for(lambda: not jobs.list(live), timeout=60)


def _log(jobs: JobsClient, job_id: str) -> str:
    return b"".join(jobs.logs(job_id)).decode()


def test_jobs_running_at_once_get_uids_of_their_own_and_cannot_reach_each_other(reachable_home: Path) -> None:
    uid_range = _unused_range(0)
    setup = job_user_setup(uid_range.user(uid_range.first, reachable_home))
    home = reachable_home / "home"
    home.mkdir(mode=0o711)
    peers = reachable_home / "peers.json"  # written once both jobs run: each tries the other's files
    plane = Plane(home, setup, uid_range)
    spec = {"name": "peer", "entrypoint": {"module": PROBE, "args": ["--peers", str(peers)]}}
    with JobsClient(plane.address, security=ChannelSecurity(token=ADMIN_TOKEN)) as jobs:
        try:
            first, second = jobs.submit(spec), jobs.submit(spec)
            for job in (first, second):
                wait_for(lambda job=job: "probe up" in _log(jobs, job.job_id), timeout=120)
            # The range (two uids) is held: a third job waits for one, saying so, rather than share one.
            third = jobs.submit({"name": "after", "entrypoint": {"module": PROBE}})
            wait_for(
                lambda: "waiting for a uid of AETHER_JOB_UID_RANGE" in _log(jobs, third.job_id), timeout=60
            )
            assert jobs.get(third.job_id).state == pb.JOB_STATE_QUEUED
            folders = {job.job_id: str(Path(job.log_path).parent) for job in (first, second)}
            temp = peers.with_name(".peers.json.tmp")
            temp.write_text(json.dumps(folders))
            temp.chmod(0o644)
            temp.rename(peers)
            done = [jobs.wait(job.job_id, timeout=120) for job in (first, second, third)]
            logs = [_log(jobs, job.job_id) for job in done]
        finally:
            _cancel_live_jobs(jobs)  # jobs outlive their control plane: a failure must leave none running
            plane.stop()
    assert [job.state for job in done] == [pb.JOB_STATE_SUCCEEDED] * 3, logs
    outputs = [json_format.MessageToDict(job.outputs) for job in done]
    uids = [int(output["uid"]) for output in outputs]
    # A uid each, of the range, as their group too, with no other group; HOME their work folder.
    assert uids[0] != uids[1] and {uids[0], uids[1]} == {uid_range.first, uid_range.last}, outputs
    for job, output, uid in zip(done, outputs, uids, strict=True):
        assert (output["gid"], output["groups"], output["own_token"]) == (uid, [], "done"), output
        assert output["home"] == str(Path(job.log_path).parent / "work")
    # Neither could read, list or write into the other's token, work or checkpoint folder.
    for other, output in ((done[1], outputs[0]), (done[0], outputs[1])):
        names = ("token", "work", "write work", "checkpoints")
        assert output["tried"] == {f"{other.job_id} {name}": "PermissionError" for name in names}, output
        work = Path(other.log_path).parent / "work"
        assert (work.stat().st_uid, stat.S_IMODE(work.stat().st_mode)) == (uids[done.index(other)], 0o700)
        assert not (work / "from-another-job").exists()
    # Both uids went back to the range: the third job got one, and no process runs as either any more.
    assert uids[2] in uid_range
    assert not uids_in_use() & {uid_range.first, uid_range.last}
    for job in done:  # each job's folder is closed to every uid again
        assert stat.S_IMODE(Path(job.log_path).parent.stat().st_mode) == 0o700


#: Job A (argv: a file and a folder to leave): copies its token into a 0600 file in /tmp, leaves a folder
#: with a file in /dev/shm and a SysV shared memory segment, all its uid's, and ends.
LEAVE = """
import ctypes, os, pathlib, sys
secret, folder = sys.argv[1:3]
token = pathlib.Path(os.environ["AETHER_TOKEN_FILE"]).read_text()
descriptor = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(descriptor, token.encode())
os.close(descriptor)
os.mkdir(folder, 0o700)
pathlib.Path(folder, "cache").write_text(token)
segment = ctypes.CDLL(None).shmget(0, 4096, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
print("left", os.getuid(), segment, flush=True)
"""
#: Job B (argv: the paths A left): says its uid, TMPDIR, where tempfile writes, and which paths it finds.
FIND = """
import json, os, sys, tempfile
found = [path for path in sys.argv[1:] if os.path.lexists(path)]
seen = {"uid": os.getuid(), "TMPDIR": os.environ.get("TMPDIR"), "tempdir": tempfile.gettempdir()}
seen["found"] = found
print("found " + json.dumps(seen), flush=True)
"""


def _segments_of(uid: int) -> list[int]:
    """The SysV shared memory segments ``uid`` owns."""
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()
    rows = [dict(zip(lines[0].split(), line.split(), strict=False)) for line in lines[1:]]
    return [int(row["shmid"]) for row in rows if int(row["uid"]) == uid]


def test_a_uid_handed_to_the_next_job_holds_nothing_the_last_job_left(reachable_home: Path) -> None:
    """A uid of the range went to the next job with whatever its last job had left outside its folder: a
    copy of that job's token in /tmp, a cache in /dev/shm (the next job would run it), a shared memory
    segment. All of it is removed before the uid is handed out again, and TMPDIR is in the job's own
    work folder, so that what honours it never writes to the shared /tmp."""
    uid_range = _unused_range(1, size=1)  # one uid: job B gets job A's
    setup = job_user_setup(uid_range.user(uid_range.first, reachable_home))
    home = reachable_home / "home"
    home.mkdir(mode=0o711)
    tag = os.urandom(8).hex()
    secret, folder = Path(f"/tmp/aether-leftover-{tag}"), Path(f"/dev/shm/aether-leftover-{tag}")
    plane = Plane(home, setup, uid_range)
    try:
        with JobsClient(plane.address, security=ChannelSecurity(token=ADMIN_TOKEN)) as jobs:
            try:
                leave = [setup.python, "-c", LEAVE, str(secret), str(folder)]
                a = jobs.wait(
                    jobs.submit({"name": "a", "entrypoint": {"command": leave}}).job_id, timeout=120
                )
                a_log = _log(jobs, a.job_id)
                assert a.state == pb.JOB_STATE_SUCCEEDED, a_log
                segment = int(re.findall(r"^left \d+ (-?\d+)$", a_log, re.M)[0])
                assert segment >= 0 and secret.stat().st_uid == uid_range.first  # left, until B starts
                find = [setup.python, "-c", FIND, str(secret), str(folder), str(folder / "cache")]
                b = jobs.wait(jobs.submit({"name": "b", "entrypoint": {"command": find}}).job_id, timeout=120)
                b_log = _log(jobs, b.job_id)
            finally:
                _cancel_live_jobs(jobs)
    finally:
        plane.stop()
        left = _segments_of(uid_range.first)
        secret.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        for ident in left:  # IPC_RMID
            ctypes.CDLL(None).shmctl(ident, 0, None)
    assert b.state == pb.JOB_STATE_SUCCEEDED, b_log
    seen = json.loads(re.findall(r"^found (.*)$", b_log, re.M)[0])
    work = Path(b.log_path).parent / "work"
    assert seen == {
        "uid": uid_range.first, "TMPDIR": str(work / "tmp"), "tempdir": str(work / "tmp"), "found": []
    }, b_log  # fmt: skip
    assert left == []


def test_the_uid_a_job_gave_back_is_the_last_to_be_handed_out_again(reachable_home: Path) -> None:
    """Jobs one after the other got the same uid (the lowest free one): the next job predictably got the
    uid the last one had used. The free uid released longest ago goes out first."""
    uid_range = _unused_range(2)
    setup = job_user_setup(uid_range.user(uid_range.first, reachable_home))
    home = reachable_home / "home"
    home.mkdir(mode=0o711)
    plane = Plane(home, setup, uid_range)
    uids = []
    try:
        with JobsClient(plane.address, security=ChannelSecurity(token=ADMIN_TOKEN)) as jobs:
            try:
                for n in range(3):
                    done = jobs.wait(
                        jobs.submit({"name": f"j{n}", "entrypoint": {"module": PROBE}}).job_id, 120
                    )
                    assert done.state == pb.JOB_STATE_SUCCEEDED, _log(jobs, done.job_id)
                    uids.append(int(json_format.MessageToDict(done.outputs)["uid"]))
            finally:
                _cancel_live_jobs(jobs)
    finally:
        plane.stop()
    assert uids == [uid_range.first, uid_range.last, uid_range.first]


def test_the_sweep_removes_only_the_uids_own_and_follows_no_link(tmp_path: Path) -> None:
    """What the sweep of a uid removes in a shared folder: its files, links and emptied folders; not what
    a link of its points to, not another user's files (nor its folder holding them: the uid is then not
    handed out), nor anything in the jobs folder (the jobs' work folders are their uids')."""
    uid = _unused_range(3).first
    shared, outside, jobs = tmp_path / "shared", tmp_path / "outside", tmp_path / "shared" / "home" / "jobs"
    for folder in (shared / "own" / "deeper", shared / "mixed", outside, jobs / "job" / "work"):
        folder.mkdir(parents=True)
    for path in (
        shared / "own" / "deeper" / "file",
        shared / "file",
        outside / "file",
        jobs / "job" / "work" / "f",
    ):
        path.write_text("the uid's")
    (shared / "mixed" / "others").write_text("root's")
    (shared / "link").symlink_to(outside / "file")
    (shared / "own" / "link-to-folder").symlink_to(outside)
    owned = [
        shared / "own", shared / "own" / "deeper", shared / "own" / "deeper" / "file", shared / "file",
        shared / "mixed", outside / "file", jobs / "job" / "work", jobs / "job" / "work" / "f",
        shared / "link", shared / "own" / "link-to-folder",
    ]  # fmt: skip
    try:
        for path in owned:
            os.lchown(path, uid, uid)
        problems = sweep_uid(uid, keep=(jobs,), folders=(str(shared),))
        found = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*"))
    finally:  # nothing of the uid's may be left for a later sweep of /tmp to trip on (pytest keeps tmp_path)
        for folder in (shared, outside):
            shutil.rmtree(folder)
    assert problems == [f"cannot remove {shared / 'mixed'}: Directory not empty"]
    assert found == [
        "outside", "outside/file", "shared", "shared/home", "shared/home/jobs", "shared/home/jobs/job",
        "shared/home/jobs/job/work", "shared/home/jobs/job/work/f", "shared/mixed", "shared/mixed/others",
    ]  # fmt: skip


def test_jobs_waiting_for_a_uid_cost_one_proc_scan_a_tick_not_one_each(reachable_home: Path) -> None:
    """Every queued job the scheduler admitted read the running jobs and scanned /proc for a free uid, on
    every tick: 80 jobs behind a range of one uid kept the supervisor busy and its cancels late. What is
    held is now read once a tick, and once no uid is free the jobs after it are not looked at."""
    uid_range = _unused_range(4, size=1)  # one uid: the holder takes it, the rest wait
    setup = job_user_setup(uid_range.user(uid_range.first, reachable_home))
    home = reachable_home / "home"
    home.mkdir(mode=0o711)
    (home / "jobs").mkdir()  # made at start by the control plane (the supervisor opens it to the range)
    engine = create_db_engine(f"sqlite:///{home / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = JobsSettings(
        folder=home / "jobs", pool=DevicePool.from_config("0"), tick_s=0.1, kill_grace_s=1.0,
        job_cwd=REPO_ROOT, job_uid_range=uid_range,
    )  # fmt: skip
    base_env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO_ROOT), *setup.path))}
    executor = LocalExecutor(python=setup.python, cwd=REPO_ROOT, base_env=base_env, kill_grace_s=1.0)
    supervisor = Supervisor(sessions, settings, executor, lambda: "127.0.0.1:1")
    service = JobService(
        sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(home / "offline"))
    )
    holder = service.submit(spec_from_mapping(job_spec("holder", "--sleep", "120")), actor="tester")
    try:
        supervisor.tick()
        assert service.get(holder.job_id).state == pb.JOB_STATE_RUNNING, _folder_log(holder)
        queued = [service.submit(spec_from_mapping(job_spec(f"q{n}")), actor="tester") for n in range(6)]
        for _ in range(2):  # the first tick tells each queued job that it waits; the second, none again
            before = scans()
            supervisor.tick()
            assert scans() - before == 1
        for job in queued:
            assert service.get(job.job_id).state == pb.JOB_STATE_QUEUED
            assert _folder_log(job).count("waiting for a uid of AETHER_JOB_UID_RANGE") == 1, _folder_log(job)
    finally:  # jobs outlive their supervisor: a failure must leave none running
        _stop_every_job(service, supervisor)
        engine.dispose()


def test_waiting_for_a_uid_does_not_count_toward_giving_its_start_up(reachable_home: Path) -> None:
    """A job's start failed once (its ``run.json`` a folder: its run id cannot be reserved), then it
    waited for the range's one uid, held by other jobs, for longer than ``start_give_up_s``. Waiting is
    not a failed start, but the give-up clock ran on through it (unless the job happened to be the first
    of its tick to find no uid), and the job was FAILED at its first failed start once a uid was free.
    Now a wait pauses the clock; the bound still ends the job once its starts fail for that long."""
    give_up_s = 0.3
    uid_range = _unused_range(5, size=1)
    setup = job_user_setup(uid_range.user(uid_range.first, reachable_home))
    home = reachable_home / "home"
    home.mkdir(mode=0o711)
    (home / "jobs").mkdir()
    engine = create_db_engine(f"sqlite:///{home / 'aether.db'}")
    upgrade_to_head(engine)
    sessions = create_session_factory(engine)
    settings = JobsSettings(
        folder=home / "jobs", pool=DevicePool.from_config("0"), tick_s=0.1, kill_grace_s=1.0,
        job_cwd=REPO_ROOT, job_uid_range=uid_range, start_give_up_s=give_up_s,
    )  # fmt: skip
    base_env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO_ROOT), *setup.path))}
    executor = LocalExecutor(python=setup.python, cwd=REPO_ROOT, base_env=base_env, kill_grace_s=1.0)
    supervisor = Supervisor(sessions, settings, executor, lambda: "127.0.0.1:1")
    service = JobService(
        sessions, settings, FeatureRegistry(sessions, ()), OfflineStore(str(home / "offline"))
    )

    def submit(name: str, *args: str, priority: int = 0) -> str:
        spec = job_spec(name, *args, priority=priority)
        return service.submit(spec_from_mapping(spec), actor="tester").job_id

    broken = submit("broken")
    (settings.folder / broken / "run.json").mkdir()
    try:
        supervisor.tick()  # its first failed start
        assert service.get(broken).reason.startswith("waiting to start: cannot reserve")

        # The holder takes the uid; in each tick the next job is the first to find none, and the broken
        # job, after it, waits without looking (RangeUsers.none_left).
        release = reachable_home / "release"
        holder = submit("holder", "--until-file", str(release), priority=2)
        ahead = submit("ahead", priority=1)
        supervisor.tick()
        assert service.get(holder).state == pb.JOB_STATE_RUNNING
        time.sleep(give_up_s + 0.05)  # the broken job waits for a uid longer than the bound
        supervisor.tick()
        assert service.get(broken).state == pb.JOB_STATE_QUEUED

        service.cancel(ahead, "out of the broken job's way", actor="tester")
        release.touch()
        launcher = json.loads((settings.folder / holder / "attempt-1.pid.json").read_text())["pid"]
        wait_for(lambda: not process_alive(launcher), timeout=60)  # the holder's attempt is over
        supervisor.tick()  # the holder's attempt ends; the broken job gets the uid and fails, once
        assert service.get(holder).state == pb.JOB_STATE_SUCCEEDED
        waiting = service.get(broken)
        assert (waiting.state, waiting.attempt) == (pb.JOB_STATE_QUEUED, 0), waiting.reason
        assert waiting.reason.startswith("waiting to start: cannot reserve"), waiting.reason

        time.sleep(give_up_s + 0.05)  # now its starts fail for longer than the bound: it is given up
        supervisor.tick()
        failed = service.get(broken)
        assert failed.state == pb.JOB_STATE_FAILED, failed.reason
        assert failed.reason.startswith(
            f"its start failed on every try for {give_up_s:g} s (AETHER_JOBS_START_GIVE_UP_S): cannot reserve"
        ), failed.reason
    finally:  # jobs outlive their supervisor: a failure must leave none running
        _stop_every_job(service, supervisor)
        engine.dispose()


def _stop_every_job(service: JobService, supervisor: Supervisor) -> None:
    """Cancels every queued or running job and ticks the supervisor until none runs."""
    for job in service.list([pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING])[0]:
        service.cancel(job.job_id, "test teardown", actor="tester")

    def settled() -> bool:
        supervisor.tick()
        return not service.list([pb.JOB_STATE_RUNNING])[0]

    wait_for(settled, timeout=60)


def _folder_log(job: pb.Job) -> str:
    return Path(job.log_path).read_text()


# Configuration errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("200000", "expected FIRST-LAST, two uids (e.g. 200000-200099)"),
        ("200000-x", "expected FIRST-LAST, two uids (e.g. 200000-200099)"),
        ("-200000", "expected FIRST-LAST, two uids (e.g. 200000-200099)"),
        ("200099-200000", "the first uid is above the last"),
        ("200000-4294967295", "a uid is at most 4294967294"),
        ("0-10", "the range holds uid 0, root's"),
    ],
)
def test_a_bad_uid_range_is_a_configuration_error(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"AETHER_JOB_UID_RANGE={value!r}: {message}")):
        job_uid_range_from_env({"AETHER_JOB_UID_RANGE": value})


def test_a_range_holding_the_control_planes_uid_or_beside_a_job_user_is_refused() -> None:
    own = os.geteuid()
    if own != 0:  # root's own is uid 0, covered above
        with pytest.raises(ValueError, match=rf"holds uid {own}, the control plane's own"):
            job_uid_range_from_env({"AETHER_JOB_UID_RANGE": f"{own}-{own + 1}"})
    both = {"AETHER_JOB_UID_RANGE": "200000-200099", "AETHER_JOB_USER": "nobody"}
    with pytest.raises(ValueError, match="AETHER_JOB_USER and AETHER_JOB_UID_RANGE are both set"):
        job_uid_range_from_env(both)
    assert job_uid_range_from_env({}) is None


def test_a_range_holding_a_users_uid_is_refused() -> None:
    """A job run as an existing user's uid could read (and write) whatever that user owns."""
    entry = next(
        (entry for entry in pwd.getpwall() if entry.pw_uid not in (0, os.geteuid()) and entry.pw_uid < 2**31),
        None,
    )
    if entry is None:
        pytest.skip("this host has no user besides root and the tests' own")
    value = f"{entry.pw_uid}-{entry.pw_uid}"
    message = f"AETHER_JOB_UID_RANGE={value!r}: the range holds uid {entry.pw_uid}, user {entry.pw_name}'s"
    with pytest.raises(ValueError, match=re.escape(message)):
        job_uid_range_from_env({"AETHER_JOB_UID_RANGE": value})


def test_a_range_holding_a_groups_gid_is_refused_unless_the_jobs_group_is_set() -> None:
    """Each uid of the range is its job's gid unless AETHER_JOB_GROUP is set: a uid that no user has
    may still be the gid of a privileged group (a service's, say), which the job would then run with."""
    users = {entry.pw_uid for entry in pwd.getpwall()}
    group = next(
        (group for group in grp.getgrall() if group.gr_gid not in users and 0 < group.gr_gid < 2**31), None
    )
    if group is None:
        pytest.skip("every group of this host has a user of the same id")
    value = f"{group.gr_gid}-{group.gr_gid}"
    message = f"AETHER_JOB_UID_RANGE={value!r}: the range holds gid {group.gr_gid}, group {group.gr_name}'s"
    with pytest.raises(ValueError, match=re.escape(message)):
        job_uid_range_from_env({"AETHER_JOB_UID_RANGE": value})
    if os.geteuid() == 0:  # with a group of their own set, the uid is only a uid (switching needs root)
        uid_range = job_uid_range_from_env({"AETHER_JOB_UID_RANGE": value, "AETHER_JOB_GROUP": "nogroup"})
        assert uid_range is not None and uid_range.gid == grp.getgrnam("nogroup").gr_gid


def test_the_flag_is_checked_at_start_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "AETHER_HOME": str(tmp_path / "home"), "AETHER_JOB_UID_RANGE": ""}
    done = subprocess.run(
        [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0", "--job-uid-range", "5-1",
         "--db-url", f"sqlite:///{tmp_path / 'm.db'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout, "Traceback" in done.stderr) == (2, "", False), done.stderr
    assert done.stderr.splitlines()[-1] == (
        "python -m control_plane: error: AETHER_JOB_UID_RANGE='5-1': the first uid is above the last"
    )
