"""Packs onnxruntime-gpu (and the few wheels the GPU checks need) into ``.gpu/`` for this workplace's
device machine, whose calls carry at most 64 MiB and whose image has PyTorch's CUDA 13 libraries but only
the CPU build of ONNX Runtime and no package index.

    python3 scripts/device/pack_onnxruntime_gpu.py   # then on the device: bash scripts/device/gpu_check.sh

The onnxruntime-gpu wheel is ~255 MB, most of it the CUDA provider's kernels compiled for every GPU
generation (sm_75 … sm_120). The device is an H200 (sm_90), so the cubins of other architectures are
zeroed in place inside the library's ``.nv_fatbin`` section (their headers stay, so the CUDA runtime
still parses every fat binary and picks the sm_90 entry, as it would anyway); zeros compress to nothing,
and the package, without the C API library that Python does not load, fits one call (~60 MB).

Fat binary layout (public reverse engineering of ``fatbinary_section.h``): a header (magic 0xBA55ED50,
u16 version, u16 header size, u64 size of the entries), then entries, each a header (u16 kind — 1 PTX,
2 cubin —, u16, u32 header size, u64 payload size, …, u32 architecture at offset 28) and its payload.
"""

from __future__ import annotations

import argparse
import io
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".gpu"
MAGIC = struct.pack("<I", 0xBA55ED50)
CUBIN = 2
# Pure-Python (or cp312) packages the device image lacks, pinned to match its grpcio 1.84.0.
EXTRA_WHEELS = (
    "redis==7.4.1",  # pyproject keeps redis-py below 8 (cancellations lost in 8.0-8.2)
    "hiredis==3.5.0",
    "grpcio-health-checking==1.84.0",
    "grpcio-reflection==1.84.0",
)
PLATFORM_ARGS = [
    "--only-binary=:all:", "--no-deps", "--python-version", "3.12", "--implementation", "cp",
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
    "--platform", "manylinux2014_x86_64",
]  # fmt: skip


def fatbin_section(library: Path) -> tuple[int, int]:
    """(file offset, size) of the library's ``.nv_fatbin`` section, read with readelf."""
    out = subprocess.run(["readelf", "-SW", str(library)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if ".nv_fatbin" in line:
            fields = line.split()
            i = fields.index(".nv_fatbin")
            return int(fields[i + 3], 16), int(fields[i + 4], 16)
    raise ValueError(f"{library} has no .nv_fatbin section")


def keep_only_architecture(data: bytearray, start: int, end: int, arch: int) -> tuple[int, int]:
    """Zeroes, in ``data[start:end]``, every fat-binary entry but the ``arch`` cubins, in each fat binary
    that has one (a fat binary without one is left whole). Returns (bytes kept, bytes zeroed)."""
    kept = zeroed = 0
    offset = data.find(MAGIC, start, end)
    while 0 <= offset < end:
        _magic, _version, header_size, entries_size = struct.unpack_from("<IHHQ", data, offset)
        entry, stop = offset + header_size, offset + header_size + entries_size
        entries: list[tuple[int, int, int, int]] = []
        while entry < stop:
            kind, _flags, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            if entry_header == 0:
                break
            architecture = struct.unpack_from("<I", data, entry + 28)[0]
            entries.append((kind, architecture, entry + entry_header, payload))
            entry += entry_header + payload
        has_arch = any(kind == CUBIN and a == arch for kind, a, _, _ in entries)
        for kind, architecture, payload_start, payload in entries:
            if has_arch and not (kind == CUBIN and architecture == arch):
                data[payload_start : payload_start + payload] = bytes(payload)
                zeroed += payload
            else:
                kept += payload
        offset = data.find(MAGIC, stop, end)
    return kept, zeroed


def pack(version: str, arch: int) -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pip = [sys.executable, "-m", "pip", "download", "-q", *PLATFORM_ARGS, "-d", str(work)]
        subprocess.run([*pip, f"onnxruntime-gpu=={version}"], check=True)
        subprocess.run([*pip, *EXTRA_WHEELS], check=True)
        tree = work / "tree"
        with zipfile.ZipFile(next(work.glob("onnxruntime_gpu-*.whl"))) as wheel:
            wheel.extractall(tree)
        capi = tree / "onnxruntime" / "capi"
        package = tree / "onnxruntime"
        unused_dirs = [package / d for d in ("transformers", "quantization", "tools", "datasets")]
        for unused in [*capi.glob("libonnxruntime.so*"), *(d for d in unused_dirs if d.exists())]:
            shutil.rmtree(unused) if unused.is_dir() else unused.unlink()
        cuda = capi / "libonnxruntime_providers_cuda.so"
        data = bytearray(cuda.read_bytes())
        start, size = fatbin_section(cuda)
        kept, zeroed = keep_only_architecture(data, start, start + size, arch)
        cuda.write_bytes(data)
        print(f"CUDA provider: kept {kept / 1e6:.0f} MB of sm_{arch} kernels, zeroed {zeroed / 1e6:.0f} MB")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:xz", preset=9) as archive:
            archive.add(tree, arcname=".")
        (OUT / "ort-pruned.tar.xz").write_bytes(buffer.getvalue())
        for wheel_path in work.glob("*.whl"):
            if not wheel_path.name.startswith("onnxruntime_gpu"):
                shutil.copy(wheel_path, OUT / wheel_path.name)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total / 2**20:.1f} MiB; a device call carries at most 64 MiB with the tree)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1.31.1", help="onnxruntime-gpu version (CUDA 13 builds)")
    parser.add_argument("--arch", type=int, default=90, help="the device's SM architecture (H200: 90)")
    args = parser.parse_args()
    pack(args.version, args.arch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
