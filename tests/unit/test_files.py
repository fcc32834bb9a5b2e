"""clients.files.replace_when_done: the destination changes only when the writer finished; make_private."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.files import make_private, replace_when_done


def test_the_destination_appears_only_when_the_block_completes(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "file.bin"
    with replace_when_done(dest) as file:
        file.write(b"new")
        assert not dest.exists()
    assert dest.read_bytes() == b"new"


def test_an_error_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), replace_when_done(dest) as file:
        file.write(b"half")
        raise RuntimeError("the download broke")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_two_writers_to_one_destination_use_separate_files(tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    with replace_when_done(dest) as first, replace_when_done(dest) as second:
        first.write(b"a" * 10)
        second.write(b"b" * 10)
    assert dest.read_bytes() in (b"a" * 10, b"b" * 10)


def test_make_private_drops_group_and_other_bits_and_leaves_links_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared.txt"
    shared.write_text("someone else's")
    shared.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(shared)
    assert make_private(link) is False  # a link's target is not necessarily Aether's
    assert shared.stat().st_mode & 0o777 == 0o644
    folder = tmp_path / "job"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert (make_private(shared), make_private(folder)) == (True, True)
    assert (shared.stat().st_mode & 0o777, folder.stat().st_mode & 0o777) == (0o600, 0o700)
    assert make_private(shared) is False  # already private: nothing to do
    assert make_private(tmp_path / "missing") is False
