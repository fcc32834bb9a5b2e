"""The local replica manager with real ``python -m data_plane`` processes: replicas are listed only once
SERVING, scaling down drains them with SIGTERM (a clean exit, not a kill)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.aether.v1 import feature_registry_pb2
from clients.errors import FailedPrecondition
from control_plane.deployments.autoscale_loop import AutoscaleLoop, fetch_metrics
from control_plane.deployments.autoscaler import AutoscalerPolicy
from control_plane.deployments.replica import ReplicaSettings, metrics_addresses
from control_plane.deployments.replica_folders import PERSISTED, seed_file
from control_plane.deployments.replicas import ReplicaManager
from data_plane.deployment_watch import PLANS_FILE_NAME
from tests.integration.deployments.conftest import Plane

REPO = Path(__file__).resolve().parents[3]


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(answer.status)


async def test_scale_up_lists_serving_replicas_and_scale_down_drains(plane: Plane) -> None:
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60)
    )
    try:
        await manager.scale_to(2)
        addresses = manager.ready_addresses()
        assert len(addresses) == 2 and len(set(addresses)) == 2
        for address in addresses:
            assert await health(address) == health_pb2.HealthCheckResponse.SERVING
        processes = [r.process for r in manager.replicas]
        for process in processes:  # the Redis URL (a password, maybe) is not on a command line ps shows
            cmdline = await asyncio.to_thread(Path(f"/proc/{process.pid}/cmdline").read_bytes)
            assert b"redis://" not in cmdline
        await manager.scale_to(1)
        assert manager.ready_addresses() == addresses[:1]
        assert processes[1].returncode == 0  # drained and exited on SIGTERM
    finally:
        await manager.close()
    assert processes[0].returncode == 0 and manager.count == 0


async def test_a_crashed_replica_is_unlisted_and_replaced(plane: Plane) -> None:
    changes: list[list[str]] = []
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60),
        on_change=lambda: changes.append(manager.ready_addresses()),
    )
    try:
        await manager.scale_to(2)
        survivor, doomed = manager.replicas
        assert await manager.replace_failed() == 0  # nothing exited: nothing changes
        doomed.process.kill()
        await doomed.process.wait()
        assert await manager.replace_failed() == 1
        assert manager.count == 2
        assert doomed.address not in manager.ready_addresses()
        # Unlisted first (only the survivor listed), then the replacement listed once SERVING.
        assert changes[-2:] == [[survivor.address], manager.ready_addresses()]
        for address in manager.ready_addresses():
            assert await health(address) == health_pb2.HealthCheckResponse.SERVING
        assert survivor in manager.replicas and survivor.process.returncode is None
        # Its number, so its folder and logs, are the replacement's: no folder more per crash.
        (replacement,) = manager.replicas[1:]
        assert replacement.number == doomed.number
        assert sorted(p.name for p in (plane.home / "replicas").iterdir()) == ["replica-0", "replica-1"]
        assert replacement.serial == 2  # the third start: what tells it from the one it replaced
    finally:
        await manager.close()


async def test_scaling_up_again_reuses_a_stopped_replicas_number_folder_and_logs(plane: Plane) -> None:
    """Every scale-up took a new number: a long-running fleet whose load came and went left one more
    replica-N folder (snapshots, logs) per cycle, never removed, each scanned by every later seeding."""
    home = plane.home / "replicas"
    manager = ReplicaManager(ReplicaSettings(plane.address, plane.redis_url, home, start_timeout_s=60))
    try:
        await manager.scale_to(1)
        added = []
        for _ in range(2):
            await manager.scale_to(2)
            added.append(manager.replicas[1])
            await manager.scale_to(1)
            assert added[-1].process.returncode == 0  # drained, and only then its number is free
        assert [r.number for r in added] == [1, 1]
        assert [r.serial for r in added] == [1, 2]  # which tells them apart
        assert sorted(p.name for p in home.iterdir()) == ["replica-0", "replica-1"]
        log = await asyncio.to_thread((home / "replica-1" / "stderr.log").read_text)
        assert log.count("data plane listening on") == 2  # appended to, not started afresh
    finally:
        await manager.close()


async def test_a_replica_started_while_the_control_plane_is_down_serves_from_persisted_snapshots(
    plane: Plane,
) -> None:
    """Each new replica got an empty folder: during a control-plane outage it had no registry snapshot, never
    turned SERVING (start timeout, the manager's lock held meanwhile), and left a folder per retry, while
    its peers served on from their own snapshots."""
    home = plane.home / "replicas"
    manager = ReplicaManager(ReplicaSettings(plane.address, plane.redis_url, home, start_timeout_s=8))
    try:
        await manager.scale_to(1)
        (crashed,) = manager.replicas
        persisted = home / "replica-0" / "registry_snapshot.pb"
        await _until(persisted.exists, "replica 0 persists the registry")
        plane.server.stop()
        await manager.scale_to(2)  # a replica in a new folder, during the outage
        added = manager.replicas[1]
        assert added.number == 1
        assert await health(added.address) == health_pb2.HealthCheckResponse.SERVING
        seeded = home / "replica-1" / "registry_snapshot.pb"
        assert seeded.read_bytes() == persisted.read_bytes()
        assert seeded.stat().st_mtime_ns == persisted.stat().st_mtime_ns  # still as new as the original
        crashed.process.kill()  # its replacement takes its number, so its folder and snapshot
        await crashed.process.wait()
        assert await manager.replace_failed() == 1
        replacement = manager.replicas[1]
        assert replacement.number == 0
        assert await health(replacement.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await manager.close()


def test_a_folder_is_seeded_with_the_newest_readable_snapshot(tmp_path: Path) -> None:
    name, message_type = PERSISTED[0]
    assert message_type is feature_registry_pb2.RegistrySnapshot
    assert PERSISTED[1][0] == PLANS_FILE_NAME  # the name the data plane gives its persisted plans
    folders = [tmp_path / f"replica-{n}" for n in range(4)]
    for folder in folders:
        folder.mkdir()
    old, new = (
        feature_registry_pb2.RegistrySnapshot(revision=r).SerializeToString() for r in (4, 3)
    )  # a reset control plane
    (folders[0] / name).write_bytes(old)
    os.utime(folders[0] / name, ns=(10**18, 10**18))
    (folders[1] / name).write_bytes(new)
    os.utime(folders[1] / name, ns=(2 * 10**18, 2 * 10**18))
    (folders[2] / name).write_bytes(b"\xff not a snapshot")  # the newest file, but unreadable
    assert seed_file(tmp_path, folders[3], name, message_type) == folders[1] / name
    assert (folders[3] / name).read_bytes() == new
    assert seed_file(tmp_path, folders[3], name, message_type) is None  # the newest already
    assert seed_file(tmp_path, folders[1], PERSISTED[1][0], PERSISTED[1][1]) is None  # none anywhere
    assert sorted(p.name for p in folders[3].iterdir()) == [name]  # no temporary file left


def _data_planes_of(folder: Path) -> list[int]:
    """Pids of the running ``python -m data_plane`` processes whose state folder is ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or it just exited
            continue
        if b"data_plane" in command and any(str(folder).encode() in arg for arg in command):
            pids.append(int(entry.name))
    return pids


async def test_a_scale_up_cancelled_by_a_stop_leaves_no_replica_running(plane: Plane, tmp_path: Path) -> None:
    # Replica 1 takes long to start (a slow model load, say), so the fleet is stopped while replica 0 is
    # already SERVING and replica 1 still starting: neither may outlive close().
    slow = tmp_path / "slowpython.sh"
    slow.write_text(
        "#!/bin/sh\n"  # the sleep is killed with the script, so that it does not hold the stdout pipe open
        f"case \"$*\" in */replica-1/*) trap 'kill $s; exit 143' TERM; sleep 60 & s=$!; wait $s;; esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    slow.chmod(0o755)
    home = plane.home / "replicas"
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, home, start_timeout_s=60, python=str(slow))
    )
    scaling = asyncio.create_task(manager.scale_to(2))
    try:
        log = home / "replica-0" / "stderr.log"
        deadline = time.monotonic() + 60
        while (found := re.search(r"data plane listening on (\S+)", _text(log))) is None:
            assert time.monotonic() < deadline, "replica 0 never listened"
            await asyncio.sleep(0.05)
        while await health(found[1]) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "replica 0 never served"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the manager's own probe (every 50 ms) has seen it too
        assert _data_planes_of(home / "replica-0") and not scaling.done()
        scaling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scaling
        await manager.close()
        assert _data_planes_of(home / "replica-0") == [] and _data_planes_of(home / "replica-1") == []
    finally:
        scaling.cancel()
        for pid in _data_planes_of(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


async def test_a_replica_run_with_workers_starts_and_each_workers_metrics_are_scraped(plane: Plane) -> None:
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address,
            plane.redis_url,
            plane.home / "replicas",
            start_timeout_s=60,
            extra_args=("--workers", "2"),
        )
    )
    try:
        await manager.scale_to(1)
        assert manager.count == 1
        (replica,) = manager.replicas
        assert await health(replica.address) == health_pb2.HealthCheckResponse.SERVING
        endpoints = metrics_addresses(replica.metrics_address)
        assert len(endpoints) == 2 and len(set(endpoints)) == 2  # one per worker process
        for endpoint in endpoints:
            assert "aether_inference_in_flight" in await fetch_metrics(endpoint)
        loop = AutoscaleLoop(manager, AutoscalerPolicy())
        assert (await loop.measure()).replicas == 1
        process = replica.process
    finally:
        await manager.close()
    assert process.returncode == 0


async def test_a_start_timeout_says_what_it_waited_for(
    plane: Plane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    silent = tmp_path / "silentpython.sh"  # a replica that never says it listens
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=0.5, python=str(silent)
        )
    )
    with caplog.at_level(logging.ERROR, logger="aether.control_plane.replicas"):
        await manager.scale_to(1)
        await manager.scale_to(1)  # a retry takes the failed one's number, folder and log
    assert manager.count == 0
    assert [p.name for p in (plane.home / "replicas").iterdir()] == ["replica-0"]
    assert (
        "a data-plane replica failed to start: data-plane replica 0 did not start within 0.5 s: waited for "
        "its line 'aether data plane listening on HOST:PORT' on stdout"
    ) in caplog.text


@pytest.mark.parametrize("status", [1, 2])
async def test_a_replica_that_exits_before_serving_says_why_and_where_its_log_is(
    plane: Plane, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """ "exited with status N before serving" named neither the replica's stderr nor its log. Now the
    error quotes this start's last stderr lines and names the log; status 2 (a usage error, which every
    restart repeats) in the first start is raised to stop the fleet (ReplicaRefused, a
    FailedPrecondition); any other, and status 2 in any later start, is logged and retried."""
    failing = tmp_path / "failingpython.sh"
    failing.write_text(
        f"#!/bin/sh\necho 'usage: python -m data_plane [-h]' >&2\n"
        f"echo 'python -m data_plane: error: unrecognized arguments: --bogus-flag' >&2\nexit {status}\n"
    )
    failing.chmod(0o755)
    home = plane.home / "replicas"
    manager = ReplicaManager(ReplicaSettings(plane.address, plane.redis_url, home, python=str(failing)))
    log = home / "replica-0" / "stderr.log"
    said = (
        "; the end of its stderr:\n  usage: python -m data_plane [-h]\n"
        "  python -m data_plane: error: unrecognized arguments: --bogus-flag\n"
        f"(its log: {log})"
    )
    with caplog.at_level(logging.ERROR, logger="aether.control_plane.replicas"):
        if status == 2:
            with pytest.raises(FailedPrecondition) as refused:  # ReplicaRefused
                await manager.scale_to(1)
            assert refused.value.message == (
                "data-plane replica 0 exited with status 2 before serving: a usage or settings error,"
                " which every restart would repeat, so the fleet stops (check the flags given to the"
                f" replicas after --){said}"
            )
            assert "failed to start" not in caplog.text  # said once, by the fleet that stops
            # Not the first start any more: logged and retried. Its error quotes its own lines only.
            await manager.scale_to(1)
            assert (
                f"a data-plane replica failed to start: data-plane replica 0 exited with status 2 before"
                f" serving{said}\n(exit status 2 is a usage or settings error, but not in the fleet's"
                " first start" in caplog.text
            )
        else:
            await manager.scale_to(1)
            assert (
                f"a data-plane replica failed to start: data-plane replica 0 exited with status 1 before"
                f" serving{said}" in caplog.text
            )
    assert manager.count == 0


CHATTY = """
import runpy, sys, threading, time
from collections.abc import Callable
from pathlib import Path

start, done = Path(sys.argv[1]), Path(sys.argv[2])

def chatter() -> None:  # once told to (after the start), prints 256 KiB, more than a pipe holds
    while not start.exists():
        time.sleep(0.05)
    for _ in range(256):
        print("x" * 1023, flush=True)
    done.touch()

threading.Thread(target=chatter, daemon=True).start()
sys.argv = [sys.argv[0], *sys.argv[5:]]  # what follows "-m data_plane"
runpy.run_module("data_plane", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("workers", [(), ("--workers", "2")])
async def test_a_replica_that_prints_a_lot_is_not_blocked(
    plane: Plane, tmp_path: Path, workers: tuple[str, ...]
) -> None:
    (tmp_path / "chatty.py").write_text(CHATTY)
    start, done = tmp_path / "start", tmp_path / "done"
    python = tmp_path / "chattypython.sh"  # its replica (or each of its workers) prints after it started
    python.write_text(  # the repository first on the path, as for `python -m data_plane` run from it
        f"#!/bin/sh\nexport PYTHONPATH={REPO}\n"
        f'exec {sys.executable} {tmp_path / "chatty.py"} {start} {done} "$@"\n'
    )
    python.chmod(0o755)
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", python=str(python), extra_args=workers
        )
    )
    try:
        await manager.scale_to(1)
        assert manager.count == 1
        start.touch()
        deadline = time.monotonic() + 20
        while not done.exists():
            assert time.monotonic() < deadline, "the replica blocked on its stdout"
            await asyncio.sleep(0.05)
    finally:
        await manager.close()
    assert (plane.home / "replicas" / "replica-0" / "stdout.log").stat().st_size >= 256 * 1024


FLEET = """
import asyncio, sys
from collections.abc import Callable
from pathlib import Path
from control_plane.deployments.replica import ReplicaSettings
from control_plane.deployments.replicas import ReplicaManager

async def main() -> None:
    settings = ReplicaSettings(sys.argv[1], sys.argv[2], Path(sys.argv[3]), start_timeout_s=60)
    manager = ReplicaManager(settings)
    await manager.scale_to(1)
    (replica,) = manager.replicas
    print(replica.process.pid, replica.address, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
        try:
            sock.bind((host, int(port)))
        except OSError:
            return True
    return False


def _children(pid: int) -> list[int]:
    """Pids of the running ``data_plane`` processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"data_plane" in command:
            found.append(int(entry.name))
    return found


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
async def test_the_replicas_of_a_fleet_killed_with_sigkill_end_with_it(plane: Plane) -> None:
    """A fleet process killed with SIGKILL (the OOM killer) left its replicas serving forever, unlisted and
    unmanaged: a new fleet starts replicas of its own, it does not adopt the old ones."""
    fleet = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLEET, plane.address, plane.redis_url, str(plane.home / "replicas"),
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    pid = 0
    try:
        assert fleet.stdout is not None
        pid_text, address = (await asyncio.wait_for(fleet.stdout.readline(), 60)).decode().split()
        pid = int(pid_text)
        assert _running(pid) and _listening(address)
        fleet.kill()
        await fleet.wait()
        await _until(lambda: not _running(pid) and not _listening(address), "the replica outlived its fleet")
    finally:
        with contextlib.suppress(ProcessLookupError):
            fleet.kill()
        if pid and _running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
async def test_the_workers_of_a_replica_killed_with_sigkill_end_with_it(plane: Plane) -> None:
    """The manager kills a replica that overruns its stop timeout; one run with --workers left its workers
    serving on the port with nobody to stop them."""
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", extra_args=("--workers", "2")
        )
    )
    workers: list[int] = []
    try:
        await manager.scale_to(1)
        (replica,) = manager.replicas
        workers = _children(replica.process.pid)
        assert len(workers) == 2
        replica.process.kill()
        await replica.process.wait()
        await _until(
            lambda: not any(map(_running, workers)) and not _listening(replica.address),
            "the workers outlived their replica",
        )
    finally:
        await manager.close()
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
async def test_a_workers_replica_killed_for_overrunning_its_stop_timeout_takes_its_workers_along(
    plane: Plane,
) -> None:
    """The kill after the stop timeout reached only the parent of a --workers replica: its workers, still
    in the drain that overran, were told to stop by their lifeline (which they were doing already) and
    ran on for the rest of it (up to its 30 s before a SIGKILL), on their ports, after the manager had
    said the replica stopped and the fleet had exited."""
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", stop_timeout_s=0.5,
            extra_args=("--workers", "2", "--drain-delay-s", "60"),
        )
    )  # fmt: skip
    workers: list[int] = []
    try:
        await manager.scale_to(1)
        (replica,) = manager.replicas
        workers = _children(replica.process.pid)
        assert len(workers) == 2
        await manager.close()
        assert manager.killed == 1
        await _until(
            lambda: not any(map(_running, workers)) and not _listening(replica.address),
            "the workers outlived the replica killed for overrunning its stop timeout",
            timeout_s=5.0,
        )
    finally:
        await manager.close()
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)


def _resume(process: asyncio.subprocess.Process) -> None:
    """SIGCONT for a replica the test stopped, unless it is gone (the manager killed it)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)


async def test_a_hung_replica_is_unlisted_killed_and_replaced(plane: Plane) -> None:
    """A replica whose process is alive but does not answer (SIGSTOP here; a deadlock or a wedged event loop
    alike) stayed listed for ever: counted as capacity, in the endpoints file and in the clients' rotation.
    The autoscaler's pass probes every listed replica's health; after a few passes without an answer the
    replica is unlisted, killed and replaced, as a crashed one is."""
    changes: list[list[str]] = []
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60),
        on_change=lambda: changes.append(manager.ready_addresses()),
    )
    loop = AutoscaleLoop(manager, AutoscalerPolicy(min_replicas=2, max_replicas=2))
    await manager.scale_to(2)
    survivor, hung = manager.replicas
    try:
        hung.process.send_signal(signal.SIGSTOP)
        misses = ReplicaSettings(plane.address, plane.redis_url, plane.home).hung_after_misses
        for _ in range(misses - 1):  # a replica may miss a probe or two (a slow answer under load)
            await loop.tick()
            assert manager.replicas == (survivor, hung) and hung.process.returncode is None
        await loop.tick()
        assert hung.address not in manager.ready_addresses(), "the hung replica is still listed"
        assert await asyncio.wait_for(hung.process.wait(), 10) == -signal.SIGKILL  # it cannot drain
        assert manager.count == 2 and manager.replicas[0] is survivor
        (replacement,) = manager.replicas[1:]
        # Killed before it was replaced, so its number (folder, logs) is the replacement's.
        assert replacement.number == hung.number == 1 and replacement.process.returncode is None
        assert sorted(p.name for p in (plane.home / "replicas").iterdir()) == ["replica-0", "replica-1"]
        assert await health(replacement.address) == health_pb2.HealthCheckResponse.SERVING
        # Unlisted before it was killed (the endpoints file drops it first), then the replacement listed.
        assert changes[-2:] == [[survivor.address], [survivor.address, replacement.address]]
        assert survivor.process.returncode is None
        assert await health(survivor.address) == health_pb2.HealthCheckResponse.SERVING
        # Not a drain cut short: `fleet run` counts it apart and does not exit 1 for it.
        assert (manager.hung, manager.killed) == (1, 0)
    finally:
        _resume(hung.process)
        await manager.close()


async def test_a_replica_that_answers_slowly_or_not_serving_is_not_replaced(plane: Plane) -> None:
    """Only ``hung_after_misses`` probes in a row without an answer make a replica hung: one that misses
    fewer (a slow answer under load; here stopped for a while, then resumed) keeps its place, since an
    answer clears its misses, and so does one whose health answers NOT_SERVING (a draining one)."""
    settings = ReplicaSettings(
        plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60, hung_after_misses=3,
        extra_args=("--drain-delay-s", "120"),  # a SIGTERMed replica answers NOT_SERVING meanwhile
    )  # fmt: skip
    manager = ReplicaManager(settings)
    await manager.scale_to(2)
    slow, leaving = manager.replicas
    try:
        leaving.process.send_signal(signal.SIGTERM)
        await _until_health(leaving.address, health_pb2.HealthCheckResponse.NOT_SERVING)
        for _ in range(2):  # two misses, an answer, two misses: never three in a row
            slow.process.send_signal(signal.SIGSTOP)
            for _ in range(settings.hung_after_misses - 1):
                assert await manager.replace_failed() == 0
            assert slow.missed_probes == settings.hung_after_misses - 1
            slow.process.send_signal(signal.SIGCONT)
            await _until_health(slow.address, health_pb2.HealthCheckResponse.SERVING)
            assert await manager.replace_failed() == 0
        assert manager.replicas == (slow, leaving) and manager.hung == 0
        assert slow.process.returncode is None and leaving.process.returncode is None
    finally:
        _resume(slow.process)
        for replica in manager.replicas:  # both would drain for 120 s
            with contextlib.suppress(ProcessLookupError):
                replica.process.kill()
        await manager.close()


async def _until_health(address: str, status: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await health(address) == status:
                return
        except grpc.aio.AioRpcError:
            pass
        assert time.monotonic() < deadline, f"{address} never said {status}"
        await asyncio.sleep(0.05)


async def test_a_replica_that_stopped_answering_does_not_scale_its_healthy_peer_away(plane: Plane) -> None:
    """A replica that stops answering (SIGSTOP here; a wedged event loop, or one too busy to answer its
    /metrics in time) could not be scraped, so its load (its queue, however long) counted as none: the
    next decision saw an idle fleet and scaled down, stopping the newest replica, the healthy one, and
    left only the replica that answered nothing listed until it was found hung passes later."""
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60, health_timeout_s=0.5
        )
    )
    policy = AutoscalerPolicy(
        min_replicas=1, max_replicas=2, interval_s=0.3, up_window_s=0.0, down_window_s=0.0
    )
    loop = AutoscaleLoop(manager, policy)
    await manager.scale_to(2)
    silent, healthy = manager.replicas
    try:
        silent.process.send_signal(signal.SIGSTOP)
        assert await loop.tick() == 2, "scaled down on a load it could not read"
        assert manager.replicas == (silent, healthy) and healthy.process.returncode is None
        assert loop.events[-1].load.unmeasured == 1  # what the decision knew it had not seen
        silent.process.send_signal(signal.SIGCONT)
        await _until_health(silent.address, health_pb2.HealthCheckResponse.SERVING)
        assert await loop.tick() == 1  # every replica measured again, idle: down it goes
    finally:
        _resume(silent.process)
        await manager.close()


async def test_a_crashed_replica_is_replaced_at_once_not_at_the_next_decision(plane: Plane) -> None:
    """A replica that crashed (the OOM killer, say) was noticed only at the autoscaler's next pass: for up
    to a whole interval (30 s by default, often set longer) the fleet ran a replica short, and its
    endpoints file named a dead address. Its exit now wakes the loop, which replaces it then."""
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60)
    )
    loop = AutoscaleLoop(manager, AutoscalerPolicy(min_replicas=1, max_replicas=1, interval_s=600.0))
    try:
        loop.start()
        await _until(lambda: manager.count == 1, "the loop starts min_replicas", timeout_s=60)
        (crashed,) = manager.replicas
        crashed.process.kill()
        await _until(
            lambda: manager.count == 1 and manager.replicas[0] is not crashed,
            "the crashed replica was not replaced before the next decision",
            timeout_s=30,
        )
        (replacement,) = manager.replicas
        assert await health(replacement.address) == health_pb2.HealthCheckResponse.SERVING
        assert loop.events == []  # no decision was made: the loop only healed the fleet
        assert crashed.process.returncode == -signal.SIGKILL
        # Once per pause: a replica crashing again at once waits for the next decision, so a crash loop
        # (a model that kills its replica on the first request) does not restart replicas non-stop.
        replacement.process.kill()
        await replacement.process.wait()
        await asyncio.sleep(2.0)
        assert manager.replicas == (replacement,) and manager.exited.is_set()
    finally:
        await loop.stop()
        await manager.close()


async def test_stopping_the_fleet_drains_its_replicas_together_not_one_after_another(plane: Plane) -> None:
    """close() (``fleet run`` stopping) drained the replicas one at a time: N replicas took N drains, so
    a supervisor's stop timeout (docker's 10 s, say) killed the fleet, and the replicas still waiting
    their turn lost their in-flight requests, and the ones still listed kept taking new ones meanwhile."""
    drain_s = 2.0
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", start_timeout_s=60,
            extra_args=("--drain-delay-s", f"{drain_s:g}"),
        )
    )  # fmt: skip
    try:
        await manager.scale_to(3)
        processes = [r.process for r in manager.replicas]
        started = time.monotonic()
        await manager.close()
        took = time.monotonic() - started
        assert [p.returncode for p in processes] == [0, 0, 0] and manager.killed == 0  # each drained
        assert took < 2 * drain_s, f"the stop took {took:.1f} s: its drains ran one after another"
    finally:
        await manager.close()


async def test_a_replica_is_listed_once_serving_not_once_its_slower_siblings_are(
    plane: Plane, tmp_path: Path
) -> None:
    """A scale-up by several listed its replicas only once every one of them had started: a replica that
    served waited, unlisted, for its slowest sibling (up to the start timeout, a minute by default), the
    added capacity unused meanwhile. And one that crashed in that wait was listed dead afterwards: its exit
    came while it was not listed, so it did not wake the autoscaler, and the endpoints file named a dead
    address until the next decision."""
    go = tmp_path / "go"
    slow = tmp_path / "slowpython.sh"  # replica 1 starts only once the test says so
    slow.write_text(
        "#!/bin/sh\n"
        f'case "$*" in */replica-1/*) while [ ! -e {go} ]; do sleep 0.05; done;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    slow.chmod(0o755)
    home = plane.home / "replicas"
    changes: list[list[str]] = []
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, home, start_timeout_s=60, python=str(slow)),
        on_change=lambda: changes.append(manager.ready_addresses()),
    )
    scaling = asyncio.create_task(manager.scale_to(2))
    try:
        # Its stdout is copied to its folder from the moment its start is over (it is SERVING).
        await _until(lambda: (home / "replica-0" / "stdout.log").exists(), "replica 0 never served", 60)
        assert not scaling.done()
        assert [r.number for r in manager.replicas] == [0], "a serving replica waits for its sibling"
        (first,) = manager.replicas
        assert changes == [[first.address]]
        first.process.kill()  # the OOM killer, say, while its sibling still loads
        await first.process.wait()
        await _until(manager.exited.is_set, "the exit of a listed replica went unnoticed")
        go.touch()
        await scaling
        assert await manager.replace_failed(probe=False) == 1
        assert manager.count == 2 and all(r.process.returncode is None for r in manager.replicas)
        assert first.address not in manager.ready_addresses()
    finally:
        go.touch()
        scaling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scaling
        await manager.close()


async def test_a_replica_that_exits_after_its_serving_line_says_so_at_once(
    plane: Plane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that died once it had said it serves, before its health was probed SERVING (the OOM
    killer, a model that crashes its runtime), was probed for the rest of the start timeout (a minute by
    default, the manager's lock held meanwhile), and then reported as "did not start within 60 s: waited
    for SERVING from its health service", not as the exit it was, with its status and its stderr."""
    dying = tmp_path / "dyingpython.sh"
    dying.write_text(
        "#!/bin/sh\n"  # nothing listens on the discard port: the probe is refused until the timeout
        "echo 'aether data plane listening on 127.0.0.1:9'\n"
        "echo 'aether data plane metrics on 127.0.0.1:9'\n"
        "echo 'aether data plane serving'\n"
        "echo 'Fatal Python error: Segmentation fault' >&2\n"
        "exit 139\n"
    )
    dying.chmod(0o755)
    home = plane.home / "replicas"
    manager = ReplicaManager(
        ReplicaSettings(plane.address, plane.redis_url, home, start_timeout_s=600, python=str(dying))
    )
    with caplog.at_level(logging.ERROR, logger="aether.control_plane.replicas"):
        await asyncio.wait_for(manager.scale_to(1), 60)
    assert manager.count == 0
    log = home / "replica-0" / "stderr.log"
    assert (
        "a data-plane replica failed to start: data-plane replica 0 exited with status 139 before serving;"
        f" the end of its stderr:\n  Fatal Python error: Segmentation fault\n(its log: {log})"
    ) in caplog.text
