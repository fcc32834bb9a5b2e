"""The training context from the launch environment: identity, hyperparameters, checkpoints that carry
the epoch metrics, outputs.json written where the control plane reads it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.jobs.launch_env import LaunchEnv
from control_plane.jobs.spec import spec_from_mapping, spec_to_json
from control_plane.training.checkpoint import TrainingState, encode
from control_plane.training.context import CHECKPOINT_FLUSH_S, TrainingContext


def launch(tmp_path: Path, attempt: int = 1) -> LaunchEnv:
    spec_path = tmp_path / "spec.json"
    spec = spec_from_mapping(
        {
            "name": "demo",
            "entrypoint": {"module": "my.job"},
            "hyperparameters": {"lr": 0.1, "log_every_batch": True, "keep_last_checkpoints": 2},
            "checkpoint_every_epochs": 2,
        }
    )
    spec_path.write_text(spec_to_json(spec))
    return LaunchEnv(
        job_id="j1",
        attempt=attempt,
        spec_path=spec_path,
        checkpoint_dir=tmp_path / "job" / "checkpoints",
        control_plane_addr="127.0.0.1:1",  # nothing listens: these tests never touch the network
        tracking_experiment="exp",
        run_id="r1",
    )


def runless(tmp_path: Path, attempt: int = 1) -> dict[str, str]:
    """An attempt's launch environment without a tracking run: rank 0 resuming a checkpoint would
    otherwise read the run's curves to mend them from a control plane that is not there (launch())."""
    return dataclasses.replace(launch(tmp_path, attempt), run_id="").to_env()


def test_from_env_reads_the_launch_contract(tmp_path: Path) -> None:
    ctx = TrainingContext.from_env(launch(tmp_path, attempt=2).to_env())
    assert (ctx.job_id, ctx.attempt, ctx.checkpoint_dir) == ("j1", 2, tmp_path / "job" / "checkpoints")
    assert ctx.hyperparameters.number("lr", 0.0) == 0.1 and ctx.log_per_batch
    assert (ctx.spec.checkpoint_interval, ctx.checkpoints.keep_last) == (2, 2)


def test_missing_launch_variables_name_the_variable() -> None:
    with pytest.raises(KeyError, match="AETHER_JOB_ID"):
        TrainingContext.from_env({})


def test_checkpoints_carry_the_epoch_metrics(tmp_path: Path) -> None:
    ctx = TrainingContext(launch(tmp_path), TrainingContext.from_env(launch(tmp_path).to_env()).spec)
    ctx._epoch_metrics = {0: {"loss": 1.5}, 1: {"loss": 0.5}}  # what log_metrics records
    path = ctx.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=2))
    assert path is not None and path.parent == ctx.checkpoint_dir
    checkpoint = ctx.checkpoints.resume()
    assert checkpoint is not None and checkpoint.sdk == {
        "epoch_metrics": {0: {"loss": 1.5}, 1: {"loss": 0.5}}
    }


def test_outputs_json_is_written_beside_the_checkpoint_folder(tmp_path: Path) -> None:
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    path = ctx.write_outputs({"model": "demo", "version": 3})
    assert path == tmp_path / "job" / "outputs.json"
    assert json.loads(path.read_text()) == {"model": "demo", "version": 3}
    assert [p.name for p in path.parent.iterdir()] == ["outputs.json"]  # no temp file left


def test_outputs_json_is_json_whatever_numbers_the_job_holds(tmp_path: Path) -> None:
    # Python's json.dumps writes a diverged loss as NaN (and infinities as Infinity), which no JSON
    # reader but Python's takes. They are written as the text the control plane keeps them as
    # ("NaN"), and so is an integer no double holds; the warning names where they were.
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    huge = 10**400
    outputs = {
        "model": "demo",
        "loss": float("nan"),
        "metrics": {"best": [float("inf"), -float("inf"), 0.5], "n": huge, "ok": 2},
        "pair": (1.5, float("nan")),
    }
    with pytest.warns(
        UserWarning, match=r"loss, metrics\.best\[0\], metrics\.best\[1\], metrics\.n, pair\[1\]"
    ):
        path = ctx.write_outputs(outputs)
    text = path.read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert strict == {
        "model": "demo",
        "loss": "NaN",
        "metrics": {"best": ["Infinity", "-Infinity", 0.5], "n": str(huge), "ok": 2},
        "pair": [1.5, "NaN"],
    }
    assert outputs["loss"] != outputs["loss"]  # the caller's mapping is left as it was


def test_outputs_json_takes_numpy_and_torch_values(tmp_path: Path) -> None:
    """A training loop holds numpy scalars (``np.mean(losses)`` is an np.float64 but ``loss.mean()`` of a
    float32 array an np.float32), numpy arrays and torch tensors: ``json.dumps`` raised TypeError on each
    but np.float64 (a float subclass), so the job's last line failed and its outputs were lost. They are
    written as plain JSON numbers, booleans and lists, a non-finite one as its text as for Python floats;
    numpy integer keys (``np.unique`` labels) become the keys JSON has."""
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    outputs = {
        "loss": np.float32(0.25),
        "steps": np.int64(2**40),
        "small": np.uint8(7),
        "converged": np.bool_(True),
        "diverged": np.float32("nan"),
        "per_class": {np.int64(3): np.float16(0.5), np.int32(-1): np.float64("inf")},
        "weights": np.array([[1.5, np.inf], [0.0, -2.0]], dtype=np.float32),
        "zero_d": np.array(4),
        "tensor": torch.tensor([0.5, float("nan")]),
        "tensor_0d": torch.tensor(2.5, requires_grad=True) * 2,
        "bf16": torch.tensor([1.0, 3.0], dtype=torch.bfloat16),
        "flags": torch.tensor([True, False]),
    }
    with pytest.warns(UserWarning, match=r"at diverged, per_class\.-1, weights\[0\]\[1\], tensor\[1\]$"):
        path = ctx.write_outputs(outputs)
    strict = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert strict == {
        "loss": 0.25,
        "steps": 2**40,
        "small": 7,
        "converged": True,
        "diverged": "NaN",
        "per_class": {"3": 0.5, "-1": "Infinity"},
        "weights": [[1.5, "Infinity"], [0.0, -2.0]],
        "zero_d": 4,
        "tensor": [0.5, "NaN"],
        "tensor_0d": 5.0,
        "bf16": [1.0, 3.0],
        "flags": [True, False],
    }
    assert type(strict["steps"]) is int and type(strict["converged"]) is bool


def test_outputs_json_refuses_what_is_no_json_naming_where(tmp_path: Path) -> None:
    """What JSON has no value for (a complex number, an object) is refused naming where it was, before
    anything is written; json.dumps named neither the key nor the place."""
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    for bad, shown in [
        ({"eig": np.array([1 + 2j])}, r"eig\[0\]: \(1\+2j\)"),
        ({"m": {"c": np.complex64(1j)}}, r"m\.c: 1j"),
        ({"t": torch.tensor(1 + 1j)}, r"t: \(1\+1j\)"),
        ({"o": object()}, r"o: <object object"),
    ]:
        with pytest.raises(TypeError, match=f"outputs.json: {shown}.* is not a JSON value"):
            ctx.write_outputs(bad)
    assert not (tmp_path / "job" / "outputs.json").exists()


def test_a_metric_that_is_not_one_number_is_refused_naming_it(tmp_path: Path) -> None:
    """``ctx.log_metrics(epoch, loss=losses)`` with the batch's loss tensor instead of its mean: refused at
    the call, naming the metric and its shape, before anything is kept for the checkpoints."""
    ctx = TrainingContext.from_env(launch(tmp_path).to_env())
    with pytest.raises(InvalidArgument, match=r"metric 'loss': a Tensor of shape \(4,\) holds 4 values"):
        ctx.log_metrics(0, loss=torch.ones(4), acc=np.float32(0.5))
    with pytest.raises(InvalidArgument, match=r"metric 'val/acc': value \(1\+0j\) is complex"):
        ctx.log_metrics(0, {"val/acc": np.complex64(1)})
    assert ctx._epoch_metrics == {} and ctx._metrics is None


def test_only_rank_0_logs_checkpoints_and_writes_outputs(tmp_path: Path) -> None:
    # Under torchrun (a job with gpus > 1) every rank runs the job's code with its own RANK; before, each
    # logged every metric point, wrote the same checkpoint files and outputs.json at once.
    environ = {**runless(tmp_path), "WORLD_SIZE": "2"}
    other = TrainingContext.from_env({**environ, "RANK": "1"})
    assert not other.is_primary and other.launch.rank == 1
    other.log_metrics(0, loss=1.0)
    other.log_batch_metrics(1, loss=1.0)
    assert other._metrics is None  # no tracking client made, nothing buffered to ship
    assert other.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1)) is None
    assert other.write_outputs({"model": "demo"}) == tmp_path / "job" / "outputs.json"
    assert not (tmp_path / "job" / "outputs.json").exists()
    assert not other.checkpoint_dir.exists() or not any(other.checkpoint_dir.iterdir())

    primary = TrainingContext.from_env({**environ, "RANK": "0"})
    assert primary.is_primary
    written = primary.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1))
    assert written is not None and written.parent == primary.checkpoint_dir
    assert primary.resume() is not None
    resumed = other.resume()  # every rank resumes from the checkpoint rank 0 resumed from
    assert resumed is not None and resumed.path == written
    assert other._metrics is None  # nor does resuming mend curves (send points) from another rank


def test_a_checkpoint_after_epoch_points_only_does_not_wait_on_the_control_plane(tmp_path: Path) -> None:
    # Epoch points are in the checkpoint (a resume sends those the run lacks), so only per-batch points
    # are sent before it. It waited for every checkpoint's round trip, most of the SDK's time per epoch,
    # and here (nothing listens) for the whole CHECKPOINT_FLUSH_S.
    ctx = TrainingContext(launch(tmp_path), TrainingContext.from_env(launch(tmp_path).to_env()).spec)
    ctx.log_metrics(0, loss=1.5)
    started = time.monotonic()
    assert ctx.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1)) is not None
    assert time.monotonic() - started < CHECKPOINT_FLUSH_S / 2
    checkpoint = ctx.checkpoints.resume()
    assert checkpoint is not None and checkpoint.sdk["epoch_metrics"] == {0: {"loss": 1.5}}
    ctx.metrics.client.close_timeout_s = 0.1  # what it buffered has nowhere to go
    ctx.metrics.close()


def test_batch_points_a_checkpoint_timed_out_on_are_waited_for_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint waits (bounded) for the per-batch points logged before it: a resume from it does not
    # replay their steps. When that wait timed out, the next checkpoint did not wait for them at all
    # unless a batch was logged in between, so a crash after it lost them though the control plane was
    # back by then.
    ctx = TrainingContext(launch(tmp_path), TrainingContext.from_env(launch(tmp_path).to_env()).spec)
    ctx.log_batch_metrics(1, loss=1.5)
    waits: list[float | None] = []
    answers = iter([False, True])  # unreachable at the first checkpoint, back at the second

    def flush(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return next(answers)

    monkeypatch.setattr(ctx.metrics, "flush", flush)
    state = TrainingState(torch.nn.Linear(2, 1), epoch=1)
    ctx.checkpoint(state)
    ctx.checkpoint(state)  # no batch logged in between
    ctx.checkpoint(state)  # sent: nothing to wait for
    assert waits == [CHECKPOINT_FLUSH_S, CHECKPOINT_FLUSH_S]
    ctx.metrics.client.close_timeout_s = 0.1  # what it buffered has nowhere to go
    ctx.metrics.close()


#: A rank of a job without a process group, in a process of its own: resumes (``argv[3]``, when given,
#: is how long it waits for rank 0's record), then saves ``argv[2]`` checkpoints (rank 0's go on disk, as
#: its training goes on), and says which checkpoint it resumed from.
_RANK_TRAINS = """
import json, sys, warnings
import torch
from control_plane.training.checkpoint import TrainingState
from control_plane.training.context import TrainingContext

warnings.simplefilter("ignore")
context = TrainingContext.from_env(json.loads(sys.argv[1]))
resumed = context.resume(**({"record_wait_s": float(sys.argv[3])} if len(sys.argv) > 3 else {}))
state = TrainingState(torch.nn.Linear(2, 1), epoch=0 if resumed is None else resumed.epoch)
for _ in range(int(sys.argv[2])):
    state.epoch += 1
    context.checkpoint(state)
print(resumed.path.name if resumed is not None else "")
"""


def _rank_command(environ: dict[str, str], rank: int, saves: int = 0, *wait_s: str) -> list[str]:
    with_rank = json.dumps({**environ, "RANK": str(rank), "WORLD_SIZE": "2"})
    return [sys.executable, "-c", _RANK_TRAINS, with_rank, str(saves), *wait_s]


def _train_as_rank(environ: dict[str, str], rank: int, saves: int = 0) -> str:
    done = subprocess.run(_rank_command(environ, rank, saves), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_a_rank_other_than_0_without_a_process_group_never_writes_the_checkpoints(tmp_path: Path) -> None:
    """Without a process group the barriers around rank 0's writes do nothing, so a rank 1 resuming
    while rank 0 writes deleted rank 0's checkpoint in flight (its temporary file: rank 0's rename then
    failed, and its attempt with it) and renamed a corrupt checkpoint rank 0 was setting aside too (the
    second rename failed on a file gone). Now only rank 0 writes: rank 1 loads the checkpoint rank 0
    resumed from and leaves everything else alone. Real ranks, each a process of its own."""
    environ = runless(tmp_path)
    primary = TrainingContext.from_env({**environ, "RANK": "0"})
    older = primary.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1))
    newest = primary.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=2))
    assert older is not None and newest is not None
    newest.write_bytes(b"not a checkpoint")  # damaged on disk since it was written

    assert _train_as_rank(environ, 0) == older.name  # rank 0 sets the damaged one aside
    assert list(primary.checkpoint_dir.glob("*.corrupt")) == [newest.with_name(newest.name + ".corrupt")]
    in_flight = primary.checkpoint_dir / f".checkpoint-00000003.ckpt.{'0' * 32}.tmp"
    in_flight.write_bytes(b"rank 0 is still writing this")  # rank 0's next write, not renamed yet
    damaged = primary.checkpoint_dir / "checkpoint-00000004.ckpt"
    damaged.write_bytes(b"damaged too")

    assert _train_as_rank(environ, 1) == older.name  # it resumes where rank 0 did
    assert in_flight.read_bytes() == b"rank 0 is still writing this"
    assert damaged.read_bytes() == b"damaged too"  # left for rank 0 to set aside


#: Rank 0 of such a job writing checkpoints (``argv[2]`` of them), then saying it is done.
_RANK_0_WRITES = """
import json, sys
from pathlib import Path
import torch
from control_plane.training.checkpoint import TrainingState
from control_plane.training.context import TrainingContext

context = TrainingContext.from_env(json.loads(sys.argv[1]))
context.resume()  # from none: the other rank waits for its record
state = TrainingState(torch.nn.Linear(2, 1))
for epoch in range(1, int(sys.argv[2]) + 1):
    state.epoch = epoch
    context.checkpoint(state)
Path(sys.argv[3]).touch()
"""

#: Another rank resuming again and again (a fresh context each time, as each attempt's) until rank 0 is done.
_RANK_1_RESUMES_UNTIL_DONE = """
import json, sys, warnings
from pathlib import Path
from control_plane.training.context import TrainingContext

warnings.simplefilter("ignore")
while not Path(sys.argv[2]).exists():
    TrainingContext.from_env(json.loads(sys.argv[1])).resume()
"""


def test_rank_0_writes_its_checkpoints_while_another_rank_resumes(tmp_path: Path) -> None:
    """Real ranks at once, no process group: rank 0 writes checkpoints while rank 1 resumes over and
    over (each time waiting for, then loading, what rank 0 recorded it resumed from). Rank 1's checkpoint
    manager deleted the temporary file of the checkpoint rank 0 was writing, and rank 0's rename then
    failed (FileNotFoundError), failing the attempt; now rank 0 writes them all."""
    environ = launch(tmp_path).to_env()
    done = tmp_path / "rank-0-done"
    with_rank = {rank: json.dumps({**environ, "RANK": str(rank), "WORLD_SIZE": "2"}) for rank in (0, 1)}
    reader = subprocess.Popen([sys.executable, "-c", _RANK_1_RESUMES_UNTIL_DONE, with_rank[1], str(done)])
    try:
        writer = subprocess.run(
            [sys.executable, "-c", _RANK_0_WRITES, with_rank[0], "300", str(done)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        done.touch()  # the reader stops whatever happened to the writer
        assert reader.wait(timeout=120) == 0
    assert writer.returncode == 0, writer.stderr[-2000:]
    checkpoints = TrainingContext.from_env({**environ, "RANK": "0"}).checkpoints
    assert [path.name for path in checkpoints.checkpoints()] == [
        "checkpoint-00000299.ckpt",
        "checkpoint-00000300.ckpt",
    ]


def test_every_rank_of_an_attempt_resumes_from_the_checkpoint_rank_0_resumed_from(tmp_path: Path) -> None:
    """Real ranks without a process group: rank 0 resumes from the newest checkpoint and trains on,
    writing newer ones (more than ``keep_last``, 2, so the one it resumed from would be pruned), before
    rank 1 resumes. Each rank took the newest checkpoint it found, so rank 1 resumed from one rank 0 had
    written since, and the replicas trained on from different states. Now rank 1 resumes from the one
    rank 0 recorded for the attempt, which rank 0 keeps until the attempt ends."""
    first = runless(tmp_path, attempt=1)
    assert _train_as_rank(first, 0, saves=1) == ""
    second = runless(tmp_path, attempt=2)
    assert _train_as_rank(second, 0, saves=3) == "checkpoint-00000001.ckpt"
    assert _train_as_rank(second, 1) == "checkpoint-00000001.ckpt"
    checkpoint_dir = tmp_path / "job" / "checkpoints"
    assert sorted(path.name for path in checkpoint_dir.glob("checkpoint-*")) == [
        "checkpoint-00000001.ckpt",  # kept for the attempt's other ranks
        "checkpoint-00000003.ckpt",
        "checkpoint-00000004.ckpt",
    ]

    third = runless(tmp_path, attempt=3)  # the next attempt decides anew
    assert _train_as_rank(third, 0, saves=1) == "checkpoint-00000004.ckpt"
    assert _train_as_rank(third, 1) == "checkpoint-00000004.ckpt"
    assert sorted(path.name for path in checkpoint_dir.glob("checkpoint-*")) == [
        "checkpoint-00000004.ckpt",
        "checkpoint-00000005.ckpt",
    ]
    assert [path.name for path in checkpoint_dir.glob("resumed-attempt-*")] == ["resumed-attempt-3.json"]


def test_a_rank_started_before_rank_0_waits_for_its_choice(tmp_path: Path) -> None:
    """Rank 1 starts first and waits; rank 0 then resumes and writes a newer checkpoint at once. Rank 1
    resumes from the checkpoint rank 0 resumed from, not the newer one."""
    first = runless(tmp_path, attempt=1)
    assert _train_as_rank(first, 0, saves=1) == ""
    second = runless(tmp_path, attempt=2)
    waiting = subprocess.Popen(
        _rank_command(second, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert _train_as_rank(second, 0, saves=1) == "checkpoint-00000001.ckpt"
    finally:
        out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err[-3000:]
    assert out.strip() == "checkpoint-00000001.ckpt"


def test_a_rank_that_cannot_resume_as_rank_0_did_stops_saying_why(tmp_path: Path) -> None:
    """No record from rank 0 in time (it never resumed, or runs without ``WORLD_SIZE``), or the checkpoint
    it recorded gone since: FailedPrecondition naming the record or the checkpoint, never a resume from
    another checkpoint than rank 0's."""
    environ = {**runless(tmp_path), "WORLD_SIZE": "2"}
    primary = TrainingContext.from_env({**environ, "RANK": "0"})
    written = primary.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1))
    assert written is not None
    other = TrainingContext.from_env({**environ, "RANK": "1"})
    with pytest.raises(FailedPrecondition, match=r"rank 1: rank 0 did not record which checkpoint attempt 1"
                       r" resumes from within 0.2 s \(.*resumed-attempt-1\.json\)"):  # fmt: skip
        other.resume(record_wait_s=0.2)

    assert primary.resume() is not None
    written.unlink()  # removed by hand since rank 0 resumed from it
    with pytest.raises(FailedPrecondition, match=f"rank 1 cannot resume from {written.name}, the checkpoint"
                       " rank 0 resumed attempt 1 from: .*No such file"):  # fmt: skip
        other.resume(record_wait_s=0.2)


def test_when_rank_0_cannot_resume_the_other_ranks_stop_at_once_naming_its_error(tmp_path: Path) -> None:
    """Rank 0's resume raises (here its newest checkpoint is intact but does not load:
    ``UnreadableCheckpoint``). It wrote no record, and rank 1, already waiting for one, waited its whole
    ``record_wait_s`` (600 s by default) before failing with "did not record". Now rank 0 records its
    failure and raises its own error; rank 1 stops at once with FailedPrecondition naming that error.
    Real ranks, each a process of its own; rank 1 would wait 60 s, and must be done well before."""
    environ = runless(tmp_path)
    primary = TrainingContext.from_env({**environ, "RANK": "0"})
    older = primary.checkpoint(TrainingState(torch.nn.Linear(2, 1), epoch=1))
    assert older is not None
    unloadable = older.with_name("checkpoint-00000002.ckpt")
    unloadable.write_bytes(encode(b"not a torch file"))  # verifies, but is no torch file

    waiting = subprocess.Popen(
        _rank_command(environ, 1, 0, "60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        rank_0 = subprocess.run(_rank_command(environ, 0), capture_output=True, text=True, timeout=120)
        assert rank_0.returncode != 0
        assert "UnreadableCheckpoint: checkpoint checkpoint-00000002.ckpt is intact" in rank_0.stderr
        out, err = waiting.communicate(timeout=20)  # not the 60 s it would wait for a record
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode != 0 and out == ""
    assert "clients.errors.FailedPrecondition: rank 1: rank 0 failed to resume attempt 1" in err, err[-3000:]
    assert "UnreadableCheckpoint: checkpoint checkpoint-00000002.ckpt is intact" in err
    assert unloadable.exists() and older.exists()  # left in place, as rank 0 alone would
