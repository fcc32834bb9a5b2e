"""Checkpoints: every state restored (RNG streams continue identically), corrupt files skipped with a
warning, intact but unloadable ones refused loudly, keep-last-K pruning, atomic writes that leave nothing
behind when they fail, and no checkpoint written that torch.load(weights_only=True) could not read."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.training.checkpoint import (
    CheckpointManager,
    CorruptCheckpoint,
    CorruptCheckpointWarning,
    TrainingState,
    UnreadableCheckpoint,
    _loads,
    _plainly_loadable,
    check_loadable,
    encode,
    load_payload,
)
from control_plane.training.rng import OwnedGenerator


def make_state(seed: int = 0) -> TrainingState:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    generators: dict[str, OwnedGenerator] = {
        "batches": torch.Generator().manual_seed(seed),
        "numpy": np.random.default_rng(seed),
    }
    return TrainingState(model, optimizer, scheduler, epoch=0, step=0, generators=generators)


def train_step(state: TrainingState) -> None:
    assert state.optimizer is not None and state.scheduler is not None
    state.optimizer.zero_grad()
    state.model(torch.randn(8, 3)).pow(2).mean().backward()
    state.optimizer.step()
    state.scheduler.step()
    state.epoch += 1
    state.step += 8


def draws(state: TrainingState) -> tuple[float, ...]:
    batches = state.generators["batches"]
    numpy_generator = state.generators["numpy"]
    assert isinstance(batches, torch.Generator) and isinstance(numpy_generator, np.random.Generator)
    return (
        random.random(),
        float(np.random.rand()),
        float(np.random.randn()),
        float(torch.rand(1)),
        float(torch.rand(1, generator=batches)),
        float(numpy_generator.random()),
    )


def test_restore_brings_back_every_state_and_rng_stream(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    state = make_state()
    train_step(state)
    state.extra = {"best": 0.5, "history": [1, 2]}
    manager.save(state)
    expected_draws = draws(state)
    train_step(state)
    expected_weights = {k: v.clone() for k, v in state.model.state_dict().items()}

    fresh = make_state(seed=99)  # different weights and RNG positions until restored
    checkpoint = manager.resume()
    assert checkpoint is not None
    checkpoint.restore(fresh)
    assert (fresh.epoch, fresh.step, fresh.extra) == (1, 8, {"best": 0.5, "history": [1, 2]})
    assert draws(fresh) == expected_draws
    train_step(fresh)  # the same step from the same state: Adam moments and LR schedule were restored
    for name, tensor in fresh.model.state_dict().items():
        assert torch.equal(tensor, expected_weights[name]), name


def test_resume_without_checkpoints_is_none(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path / "new").resume() is None


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_middle, "sha256 checksum mismatch"),
        (lambda data: data[: len(data) - 100], "header says"),
        (lambda data: b"garbage" + data[7:], "bad header"),
        (lambda data: b"", "bad header"),
    ],
)
def test_corrupt_newest_falls_back_to_the_one_before_with_a_warning(
    tmp_path: Path, damage: object, reason: str
) -> None:
    manager = CheckpointManager(tmp_path, keep_last=3)
    state = make_state()
    for _ in range(3):
        train_step(state)
        manager.save(state)
    newest = tmp_path / "checkpoint-00000003.ckpt"
    assert callable(damage)
    newest.write_bytes(damage(newest.read_bytes()))

    with pytest.warns(CorruptCheckpointWarning, match=f"checkpoint-00000003.ckpt: .*{reason}"):
        checkpoint = CheckpointManager(tmp_path).resume()
    assert checkpoint is not None and (checkpoint.sequence, checkpoint.epoch) == (2, 2)
    # Kept for inspection, never tried again, and numbering goes on past it.
    assert (tmp_path / "checkpoint-00000003.ckpt.corrupt").exists()
    assert manager.save(state).name == "checkpoint-00000004.ckpt"


def test_a_checkpoint_that_cannot_be_read_falls_back_to_the_one_before_and_stays(tmp_path: Path) -> None:
    # An I/O error reading the newest checkpoint stopped resume (the OSError ended the attempt, and every
    # retry the same way) where a damaged one falls back. A real EIO: the newest checkpoint's name is a
    # link to /proc/self/mem, whose first page is never mapped; reading it fails with EIO.
    manager = CheckpointManager(tmp_path, keep_last=3)
    state = make_state()
    for _ in range(2):
        train_step(state)
        manager.save(state)
    unreadable = tmp_path / "checkpoint-00000003.ckpt"
    unreadable.symlink_to("/proc/self/mem")

    with pytest.warns(
        CorruptCheckpointWarning, match=r"cannot read checkpoint checkpoint-00000003\.ckpt: .*Errno 5"
    ):
        checkpoint = CheckpointManager(tmp_path).resume()
    assert checkpoint is not None and (checkpoint.sequence, checkpoint.epoch) == (2, 2)
    # Not shown damaged (the fault may pass): left in place, and numbering goes on past it.
    assert unreadable.is_symlink() and not (tmp_path / "checkpoint-00000003.ckpt.corrupt").exists()
    assert manager.save(state).name == "checkpoint-00000004.ckpt"


def test_a_folder_in_place_of_a_checkpoint_is_passed_over_by_resume_and_by_save(tmp_path: Path) -> None:
    # Resume never took it for a checkpoint, but save numbered the next one as if it were not there and
    # wrote onto its name: IsADirectoryError at every checkpoint, so every attempt of the job failed.
    manager = CheckpointManager(tmp_path)
    state = make_state()
    for _ in range(2):
        train_step(state)
        manager.save(state)
    (tmp_path / "checkpoint-00000003.ckpt").mkdir()
    checkpoint = manager.resume()
    assert checkpoint is not None and checkpoint.sequence == 2
    assert manager.save(state).name == "checkpoint-00000004.ckpt"
    resumed = manager.resume()
    assert resumed is not None and resumed.sequence == 4


def test_every_checkpoint_corrupt_means_starting_over(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    state = make_state()
    for _ in range(2):
        manager.save(state)
    for path in manager.checkpoints():
        path.write_bytes(_flip_middle(path.read_bytes()))
    with pytest.warns(CorruptCheckpointWarning) as caught:
        assert manager.resume() is None
    assert len(caught) == 2


def test_keeps_only_the_newest_k(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    state = make_state()
    (tmp_path / "checkpoint-00000000.ckpt.corrupt").write_bytes(b"kept for inspection")
    for _ in range(5):
        train_step(state)
        manager.save(state)
    assert [p.name for p in manager.checkpoints()] == ["checkpoint-00000004.ckpt", "checkpoint-00000005.ckpt"]
    assert [load_payload(p)["epoch"] for p in manager.checkpoints()] == [4, 5]
    assert (tmp_path / "checkpoint-00000000.ckpt.corrupt").exists()  # corrupt files are not pruned


def test_a_failed_write_leaves_no_file_and_partial_writes_are_cleaned(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    state = make_state()
    manager.save(state)
    state.extra = {"unpicklable": lambda: None}
    with pytest.raises(TypeError, match=r"cannot checkpoint extra\['unpicklable'\] = <function"):
        manager.save(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001.ckpt"]

    (tmp_path / ".checkpoint-00000002.ckpt.1234.tmp").write_bytes(b"half written by a killed process")
    reopened = CheckpointManager(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001.ckpt"]
    assert reopened.resume() is not None


def test_keep_last_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (np.arange(3), r"extra\['v'\] = array\(\[0, 1, 2\]\) \(numpy.ndarray\)"),
        (np.int64(3), r"extra\['v'\] = np.int64\(3\) \(numpy.int64\)"),
        (np.float32(1.5), r"extra\['v'\] = np.float32\(1.5\) \(numpy.float32\)"),
        (dt.datetime(2024, 1, 1), r"extra\['v'\] = .* \(datetime.datetime\)"),
        (Path("/x"), r"extra\['v'\] = .*Path\('/x'\)"),
        (collections.defaultdict(int), r"extra\['v'\] = defaultdict.* \(collections.defaultdict\)"),
        ({"a": [1, {"b": np.float32(2)}]}, r"extra\['v'\]\['a'\]\[1\]\['b'\] = np.float32\(2.0\)"),
    ],
    ids=["ndarray", "int64", "float32", "datetime", "path", "defaultdict", "nested"],
)
def test_a_value_the_loader_would_refuse_is_a_type_error_at_save(
    tmp_path: Path, value: object, shown: str
) -> None:
    # Before, such a checkpoint was written; torch.load(weights_only=True) refused it on resume, which
    # renamed it *.corrupt and silently restarted the training from scratch.
    manager = CheckpointManager(tmp_path)
    state = make_state()
    manager.save(state)
    state.extra = {"v": value}
    with pytest.raises(TypeError, match=f"cannot checkpoint {shown}.*weights_only=True"):
        manager.save(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001.ckpt"]


def test_plain_data_in_extra_round_trips(tmp_path: Path) -> None:
    extra = {"t": torch.arange(3), "n": (1, 2.5, 1j, b"x", None), "d": collections.OrderedDict(a=[True])}
    manager = CheckpointManager(tmp_path)
    manager.save(TrainingState(torch.nn.Linear(2, 1), extra=extra))
    checkpoint = manager.resume()
    assert checkpoint is not None
    assert torch.equal(checkpoint.extra["t"], extra["t"]) and checkpoint.extra["n"] == extra["n"]
    assert checkpoint.extra["d"] == extra["d"]


def test_a_numpy_learning_rate_is_saved_as_a_python_number(tmp_path: Path) -> None:
    # lr from a numpy sweep grid lands in the optimizer's param_groups and the scheduler's base_lrs; saved
    # as is, every checkpoint was unloadable and the retry restarted from scratch.
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=np.float64(0.01), betas=(np.float64(0.8), 0.9))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=np.float64(0.5))
    state = TrainingState(model, optimizer, scheduler)
    train_step(state)
    CheckpointManager(tmp_path).save(state)
    assert isinstance(optimizer.param_groups[0]["lr"], np.floating)  # the live optimizer is left alone

    checkpoint = CheckpointManager(tmp_path).resume()
    assert checkpoint is not None and checkpoint.epoch == 1
    group = checkpoint.payload["optimizer"]["param_groups"][0]
    assert (type(group["lr"]), group["lr"], group["betas"]) == (float, 0.005, (0.8, 0.9))
    fresh = torch.nn.Linear(3, 1)
    restored = TrainingState(
        fresh,
        (fresh_optimizer := torch.optim.Adam(fresh.parameters(), lr=1.0)),
        torch.optim.lr_scheduler.StepLR(fresh_optimizer, step_size=1, gamma=0.9),
    )
    checkpoint.restore(restored)
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.005
    assert restored.scheduler is not None and restored.scheduler.state_dict()["gamma"] == 0.5


def _encoded(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return encode(buffer.getvalue())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # What an earlier version wrote for a numpy metric value: intact, but the loader refuses the type.
        (_encoded({"format": 1, "sdk": {"epoch_metrics": {0: {"loss": np.float32(1.0)}}}}), "numpy"),
        (encode(b"not a torch file"), "does not load"),
        (_encoded({"format": 99}), "Unknown checkpoint format"),
    ],
    ids=["numpy-scalar", "not-torch", "unknown-format"],
)
def test_an_intact_checkpoint_that_does_not_load_stops_resume_and_stays(
    tmp_path: Path, payload: bytes, reason: str
) -> None:
    # Before, it was renamed *.corrupt like a damaged file and resume fell back to an older checkpoint or
    # to None: the training restarted without a word of why. Its checksum verifies, so no retry mends it.
    manager = CheckpointManager(tmp_path)
    manager.save(make_state())
    newest = tmp_path / "checkpoint-00000002.ckpt"
    newest.write_bytes(payload)
    with pytest.raises(UnreadableCheckpoint, match=f"(?s)checkpoint-00000002.ckpt is intact.*{reason}"):
        manager.resume()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-00000001.ckpt",
        "checkpoint-00000002.ckpt",
    ]


_LEAVES = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.complex_numbers(allow_nan=False),
    st.sampled_from([torch.float32, torch.int64, torch.device("cpu"), torch.Size([2, 3])]),
    st.integers(0, 3).map(lambda n: torch.arange(n, dtype=torch.float32)),
    # What the loader refuses, which the fast path must never take for loadable:
    st.integers(0, 3).map(np.arange),
    st.floats(allow_nan=False).map(np.float32),
    st.just(dt.date(2024, 1, 1)),
    st.just(collections.defaultdict(int)),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3),
        st.dictionaries(st.text(max_size=3), inner, max_size=3).map(collections.OrderedDict),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(_VALUES)
def test_the_fast_loadability_walk_never_passes_what_the_loader_refuses(value: object) -> None:
    # The walk (_plainly_loadable) stands in for a save-and-load round trip on every checkpoint; the round
    # trip (_loads, run on the value itself) is the reference.
    if _plainly_loadable(value):
        assert _loads(value)
    check = pytest.raises(TypeError) if not _loads(value) else contextlib.nullcontext()
    with check:
        check_loadable({"v": value})


def test_a_state_dict_passes_the_fast_walk() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    assert _plainly_loadable({"model": model.state_dict(), "optimizer": optimizer.state_dict()})


def test_a_reading_manager_changes_nothing_in_the_folder(tmp_path: Path) -> None:
    """Another rank's manager (``writer=False``) makes no folder, refuses to save or prune, and skips a
    corrupt checkpoint without setting it aside: only rank 0 writes (``context.py``)."""
    folder = tmp_path / "checkpoints"
    reader = CheckpointManager(folder, keep_last=1, writer=False)
    assert reader.resume() is None and not folder.exists()
    with pytest.raises(RuntimeError, match="this manager only reads them"):
        reader.save(make_state())
    with pytest.raises(RuntimeError, match="this manager only reads them"):
        reader.prune()
    writer = CheckpointManager(folder, keep_last=2)
    older = writer.save(make_state())
    newest = writer.save(make_state())
    newest.write_bytes(b"damaged")
    with pytest.warns(CorruptCheckpointWarning, match=newest.name):
        resumed = reader.resume()
    assert resumed is not None and resumed.path == older
    assert sorted(path.name for path in folder.iterdir()) == [older.name, newest.name]


def test_a_named_checkpoint_loads_verified_and_nothing_is_set_aside(tmp_path: Path) -> None:
    """What another rank resumes from (the one rank 0 recorded): that file, verified, or an error; a
    damaged one stays where it is, and a name that is no checkpoint's is refused."""
    writer = CheckpointManager(tmp_path, keep_last=2)
    first = writer.save(make_state())
    second = writer.save(make_state())
    reader = CheckpointManager(tmp_path, writer=False)
    loaded = reader.load(first.name)
    assert (loaded.path, loaded.sequence) == (first, 1)
    second.write_bytes(b"damaged")
    with pytest.raises(CorruptCheckpoint):
        reader.load(second.name)
    assert second.exists()
    with pytest.raises(FileNotFoundError):
        reader.load("checkpoint-00000009.ckpt")
    with pytest.raises(ValueError, match="is not the name of a checkpoint"):
        reader.load("../outputs.json")


def test_a_kept_checkpoint_outlives_pruning(tmp_path: Path) -> None:
    writer = CheckpointManager(tmp_path, keep_last=1)
    kept = writer.save(make_state())
    writer.keep(kept)
    newer = [writer.save(make_state()) for _ in range(3)]
    assert writer.checkpoints() == [kept, newer[-1]]
    with pytest.raises(RuntimeError, match="this manager only reads them"):
        CheckpointManager(tmp_path, writer=False).keep(kept)
