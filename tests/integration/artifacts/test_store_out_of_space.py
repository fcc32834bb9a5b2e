"""An artifact write that the filesystem refuses part-way (a full disk, a quota, here a file-size limit:
the kernel's EFBIG, a real fault on a real file) leaves nothing behind.

Small chunks stay in the writer's buffer: discarding the file flushed them, which failed again, and the
temporary file was never removed. On a full disk that file kept the space the next upload needed."""

from __future__ import annotations

from pathlib import Path

from tests.support.file_size_limit import run_with_file_limit

LIMIT = 1_000_000

_SCRIPT = """
import hashlib, os, sys
from control_plane.artifacts.store import ArtifactStore

store = ArtifactStore(sys.argv[1])
data = os.urandom(3 * int(sys.argv[2]))
for chunk_size in (4096, 100_000, 1 << 20):
    chunks = (data[at : at + chunk_size] for at in range(0, len(data), chunk_size))
    try:
        store.put_stream(chunks, hashlib.sha256(data).hexdigest())
    except OSError as error:
        print(chunk_size, error.errno)
    else:
        print(chunk_size, "stored")
"""


def test_a_write_refused_part_way_leaves_no_temporary_file(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    out = run_with_file_limit(_SCRIPT, LIMIT, str(root), str(LIMIT))
    assert out.split("\n")[:3] == ["4096 27", "100000 27", "1048576 27"]  # EFBIG, each time
    assert [path.name for path in root.rglob("*") if path.is_file()] == []
