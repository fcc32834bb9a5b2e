"""Run ids drawn by the SDK in pools (one ``os.urandom`` per 256 runs): well-formed version-4 UUIDs,
never repeated, not even by a forked child that inherited its parent's undrawn pool."""

from __future__ import annotations

import os
import uuid

from clients.sdk.tracking_ids import RunIds


def test_ids_are_distinct_version_4_uuids_in_hex() -> None:
    ids = RunIds()
    drawn = [ids.next() for _ in range(1_000)]  # several pools
    assert len(set(drawn)) == len(drawn)
    for run_id in drawn:
        assert len(run_id) == 32 and run_id == run_id.lower()
        assert uuid.UUID(hex=run_id).version == 4


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    ids = RunIds()
    ids.next()  # the parent holds a pool with 255 ids left
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send ten ids and leave at once
        os.write(write_end, "".join(ids.next() for _ in range(10)).encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child_text = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0
    child = {child_text[i : i + 32] for i in range(0, len(child_text), 32)}
    parent = {ids.next() for _ in range(255)}  # the rest of the inherited pool, and one more draw
    assert len(child) == 10
    assert not child & parent
