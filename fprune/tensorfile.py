"""The safetensors file format, read and written with torch alone (no extra dependency).

A safetensors file is 8 bytes of little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw little-endian bytes.  fprune reads headers to check a
checkpoint before loading it (:mod:`fprune.hf.checkpoint`) and writes the values a plan carries
(:meth:`fprune.Plan.save`); files written here load with ``safetensors.torch.load_file`` and
files it writes load here.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "t.safetensors"
    >>> save_tensors(path, {"w": torch.arange(6.0).reshape(2, 3), "i": torch.tensor([7], dtype=torch.int64)})
    >>> read_header(path)["w"].shape, load_tensors(path)["w"][1]
    ((2, 3), tensor([3., 4., 5.]))
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

import torch
from torch import Tensor

from fprune.errors import CheckpointError, InvalidArgumentError

__all__ = ["TensorEntry", "read_header", "read_tensor", "load_tensors", "save_tensors", "DTYPES", "CODES", "layout", "raw_bytes",
           "memory_of", "read_rows"]

# safetensors dtype code -> torch dtype (and its bytes per element)
DTYPES: Mapping[str, torch.dtype] = MappingProxyType({
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16,
})
CODES: Mapping[torch.dtype, str] = MappingProxyType({dtype: code for code, dtype in DTYPES.items()})
_MAX_HEADER = 100_000_000  # the format's own bound on the header's length


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies: its file, dtype code (``"F32"``, ``"BF16"``, ...), shape and bytes."""

    file: str  # the file's name
    dtype: str
    shape: tuple[int, ...]
    start: int  # first byte, from the start of the file
    end: int  # one past the last byte

    @property
    def nbytes(self) -> int:
        """Bytes the tensor takes in its file."""
        return self.end - self.start


def read_header(path: str | os.PathLike[str]) -> dict[str, TensorEntry]:
    """Every tensor of a safetensors file, from its header alone (a few kilobytes read).

    Raises:
        CheckpointError: the file is too short, truncated, its header is not JSON or malformed, or
            bytes lie after its last tensor.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is {size} bytes, too short for a safetensors file: truncated or not one")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_HEADER):
            raise CheckpointError(f"{path} declares a {length}-byte header in a {size}-byte file: truncated, or not "
                                  "a safetensors file")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has a corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a safetensors header that is not a JSON object")
    base, data = 8 + length, size - 8 - length
    entries: dict[str, TensorEntry] = {}
    covered = 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        entries[name] = entry = _entry(path, name, spec, base)
        if entry.end - base > data:
            raise CheckpointError(f"{path} is truncated: {name!r} needs bytes up to {entry.end - base} of the data, "
                                  f"which has {data}. Copy the file again")
        covered = max(covered, entry.end - base)
    if covered != data:
        raise CheckpointError(f"{path} has {data - covered} bytes after its last tensor: corrupt or appended to")
    return entries


def read_tensor(f: BinaryIO, entry: TensorEntry) -> Tensor:
    """One tensor of an open safetensors file, read from its byte range (no memory map kept).

    Only the tensor's own bytes are read, into memory the tensor then owns: reading a checkpoint
    tensor by tensor holds one tensor at a time, whatever the file's size.
    """
    return _read_range(f, entry, entry.start, entry.nbytes).reshape(entry.shape)


def read_rows(f: BinaryIO, entry: TensorEntry, start: int, stop: int) -> Tensor:
    """Rows ``start:stop`` (along dim 0) of one tensor of an open safetensors file, read alone.

    A large tensor is sliced and written a block of rows at a time this way, never held whole.
    """
    rows = entry.shape[0] if entry.shape else 1
    if not 0 <= start <= stop <= rows:
        raise CheckpointError(f"internal: rows {start}:{stop} of a tensor of {rows} rows in {entry.file}")
    row_bytes = entry.nbytes // rows if rows else 0
    flat = _read_range(f, entry, entry.start + start * row_bytes, (stop - start) * row_bytes)
    return flat.reshape(stop - start, *entry.shape[1:])


def _read_range(f: BinaryIO, entry: TensorEntry, offset: int, nbytes: int) -> Tensor:
    f.seek(offset)
    data = bytearray(nbytes)  # read into it: bytearray(f.read(n)) holds the bytes twice at its peak
    view, got = memoryview(data), 0
    while got < nbytes:
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    view.release()
    if got != nbytes:
        raise CheckpointError(f"{entry.file} ended while reading a tensor of {entry.nbytes} bytes: truncated")
    dtype = DTYPES[entry.dtype]
    flat = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
    if sys.byteorder != "little" and flat.element_size() > 1:  # pragma: no cover - big-endian hosts
        flat = flat.view(torch.uint8).reshape(-1, flat.element_size()).flip(1).reshape(-1).view(dtype)
    return flat


def load_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Every tensor of a safetensors file (checked by :func:`read_header` first), on the CPU.

    Raises:
        CheckpointError: as :func:`read_header`, or a dtype this torch lacks.
    """
    entries = read_header(path)
    with Path(path).open("rb") as f:
        return {name: read_tensor(f, entry) for name, entry in entries.items()}


def layout(specs: Mapping[str, tuple[str, tuple[int, ...]]],
           metadata: Mapping[str, str] | None = None) -> tuple[bytes, dict[str, int]]:
    """The start of a safetensors file for tensors given as name -> (dtype code, shape), in order.

    Returns the bytes to write first (length and padded JSON header) and each tensor's offset from
    the start of the file; the file then holds ``len(head) + sum of the tensors' bytes``.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    starts: dict[str, int] = {}
    for name, (code, shape) in specs.items():
        n = math.prod(shape) * torch.empty(0, dtype=DTYPES[code]).element_size()
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        starts[name] = offset
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    head = struct.pack("<Q", len(text)) + text
    return head, {name: len(head) + start for name, start in starts.items()}


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Writes `tensors` as one safetensors file (written beside `path`, then renamed onto it).

    Raises:
        CheckpointError: a value is not a tensor, or has a dtype the format lacks.
    """
    path = Path(path)
    blobs: list[bytes] = []
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, Tensor) or t.dtype not in CODES:
            raise CheckpointError(f"cannot write {name!r} ({type(t).__name__}, {getattr(t, 'dtype', None)}) in a "
                                  f"safetensors file; dtypes: {', '.join(str(d) for d in CODES)}")
        flat = t.detach().to("cpu").reshape(-1).contiguous()
        if sys.byteorder != "little" and flat.element_size() > 1:  # pragma: no cover - big-endian hosts
            flat = flat.view(torch.uint8).reshape(-1, flat.element_size()).flip(1).reshape(-1).clone()
        blobs.append(raw_bytes(flat))
    head, _ = layout({name: (CODES[tensors[name].dtype], tuple(tensors[name].shape)) for name in sorted(tensors)},
                     metadata)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            f.write(head)
            for raw in blobs:
                f.write(raw)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def raw_bytes(t: Tensor) -> bytes:
    """The bytes of a contiguous CPU tensor, copied at C speed (no numpy needed)."""
    return bytes(memory_of(t))


def memory_of(t: Tensor) -> memoryview:
    """A read-only view of a contiguous CPU tensor's bytes, without copying (valid while `t` lives)."""
    if not t.is_contiguous() or t.device.type != "cpu":
        raise InvalidArgumentError(f"memory_of needs a contiguous CPU tensor, got one on {t.device} (contiguous: "
                                   f"{t.is_contiguous()}); call .cpu().contiguous() first")
    n = t.numel() * t.element_size()
    if not n:
        return memoryview(b"")
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B").toreadonly()


def _entry(path: Path, name: str, spec: object, base: int) -> TensorEntry:
    valid = False
    if isinstance(spec, dict):
        try:
            dtype, shape, (start, end) = spec["dtype"], tuple(spec["shape"]), spec["data_offsets"]
            valid = (dtype in DTYPES and all(isinstance(d, int) and d >= 0 for d in shape)
                     and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end)
        except (TypeError, KeyError, ValueError):
            valid = False
    if not valid:
        raise CheckpointError(f"{path}: the header entry of {name!r} is malformed ({spec!r})")
    itemsize = torch.empty(0, dtype=DTYPES[dtype]).element_size()
    if end - start != math.prod(shape) * itemsize:
        raise CheckpointError(f"{path}: {name!r} is {dtype} of shape {list(shape)} but spans {end - start} bytes")
    return TensorEntry(path.name, dtype, shape, base + start, base + end)
