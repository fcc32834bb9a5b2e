"""A FAKE fault around a real ``pyarrow.fs`` filesystem: every call goes through to it, and a test's hooks
may run something first or raise instead (a read that fails once, a delete refused, a copy cut off
part-way), faults a real object store shows now and then and the fake S3 endpoint cannot be asked for
at the exact step a test needs. The bytes always come from, and go to, the filesystem wrapped.

``faulty(filesystem)`` returns the wrapper (a ``pyarrow.fs.PyFileSystem`` with the same ``type_name``)
and its :class:`Hooks`: ``before_open_input``, ``before_delete`` and ``before_copy`` get the path(s)
about to be used; ``wrap_output`` gets an output stream's path and the real stream, and returns what
the caller writes to (by default the real stream)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs


@dataclass
class Hooks:
    before_open_input: Callable[[str], None] | None = None
    before_delete: Callable[[str], None] | None = None
    before_copy: Callable[[str, str], None] | None = None
    wrap_output: Callable[[str, pa.NativeFile], Any] | None = None


class _Handler(pafs.FileSystemHandler):  # type: ignore[misc]
    def __init__(self, inner: pafs.FileSystem, hooks: Hooks) -> None:
        self._inner = inner
        self._hooks = hooks

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Handler) and other._inner.equals(self._inner)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return str(self._inner.type_name)

    def normalize_path(self, path: str) -> str:
        return str(self._inner.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return list(self._inner.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return list(self._inner.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self._inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._inner.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        self._inner.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        if self._hooks.before_delete is not None:
            self._hooks.before_delete(path)
        self._inner.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._inner.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        if self._hooks.before_copy is not None:
            self._hooks.before_copy(src, dest)
        self._inner.copy_file(src, dest)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        if self._hooks.before_open_input is not None:
            self._hooks.before_open_input(path)
        return self._inner.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        if self._hooks.before_open_input is not None:
            self._hooks.before_open_input(path)
        return self._inner.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        stream = self._inner.open_output_stream(path, metadata=metadata)
        if self._hooks.wrap_output is None:
            return stream
        return pa.PythonFile(self._hooks.wrap_output(path, stream), mode="w")

    def open_append_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        return self._inner.open_append_stream(path, metadata=metadata)


def faulty(filesystem: pafs.FileSystem) -> tuple[pafs.FileSystem, Hooks]:
    hooks = Hooks()
    return pafs.PyFileSystem(_Handler(filesystem, hooks)), hooks


class CutOffStream:
    """A writable stream that passes half of the first write it gets through to ``inner``, then raises
    (a copy interrupted part-way: a local read error, an interrupt); closing closes ``inner``, which for
    pyarrow's S3 stream completes the upload with what it was given."""

    def __init__(self, inner: pa.NativeFile, after_close: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._after_close = after_close
        self.closed = False

    def write(self, data: bytes) -> int:
        self._inner.write(bytes(data)[: max(1, len(data) // 2)])
        raise OSError("FAKE fault: the copy was cut off part-way")

    def flush(self) -> None:
        self._inner.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inner.close()
        if self._after_close is not None:
            self._after_close()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(self._inner.tell())
