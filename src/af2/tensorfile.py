"""Reading safetensors files lean: one tensor at a time, straight into the target dtype.

The safetensors layout is an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, then the raw bytes. Reading with ``pread`` into buffers we
own (instead of memory-mapping the file) keeps the file's pages out of the process's resident
memory; each range read is then dropped from the page cache (``POSIX_FADV_DONTNEED``). A tensor
stored in fp32 and wanted in bf16 is converted through a small staging buffer, so the fp32 copy
never exists whole; ``read_into`` fills a tensor the caller allocated (a slice of rows, too), so a
loader can allocate every weight before it reads any. Two tensors can be compared byte for byte,
chunk by chunk, without holding either (the official layout stores every decoder weight twice).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from af2.errors import CheckpointError

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
CHUNK_BYTES = 32 << 20  # staging buffer: small next to any model, large enough for full-speed reads


class TensorFile:
    """The tensors of one safetensors file, read on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = -1
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot open ({exc.strerror}); re-download it") from exc
        size = os.fstat(self._fd).st_size
        try:
            (header_len,) = struct.unpack("<Q", os.pread(self._fd, 8, 0))
            if header_len > size - 8:
                raise ValueError(f"header length {header_len} beyond the file's {size} bytes")
            header = json.loads(os.pread(self._fd, header_len, 8))
            header.pop("__metadata__", None)
            self._entries = {key: (_DTYPES[e["dtype"]], tuple(e["shape"]), 8 + header_len + e["data_offsets"][0],
                                   e["data_offsets"][1] - e["data_offsets"][0]) for key, e in header.items()}
        except (struct.error, ValueError, KeyError, TypeError, IndexError) as exc:
            self.close()
            raise CheckpointError(f"{self.path}: unreadable safetensors file ({exc}); re-download it") from exc
        for key, (dtype, shape, start, nbytes) in self._entries.items():
            if start + nbytes > size or nbytes != _numel(shape) * dtype.itemsize:
                self.close()
                raise CheckpointError(f"{self.path}: unreadable safetensors file (tensor {key!r} out of bounds "
                                      "or of the wrong size); re-download it")

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def dtype(self, key: str) -> torch.dtype:
        """The dtype tensor ``key`` is stored in."""
        return self._entries[key][0]

    def read(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Tensor ``key``; floating-point tensors are converted to ``dtype`` chunk by chunk."""
        src, shape, _, _ = self._entries[key]
        want = dtype if dtype is not None and src.is_floating_point else src
        return self.read_into(key, torch.empty(shape, dtype=want))

    def read_into(self, key: str, out: torch.Tensor, first: int = 0, stage: torch.Tensor | None = None) -> torch.Tensor:
        """Fill the contiguous ``out`` with tensor ``key`` from row ``first`` on (as many values as
        ``out`` holds), converted to ``out``'s dtype, through ``stage`` (a uint8 buffer, default: a new
        one of up to CHUNK_BYTES) when the dtypes differ. Returns ``out``."""
        src, shape, start, nbytes = self._entries[key]
        begin = first * _numel(shape[1:]) * src.itemsize
        size = out.numel() * src.itemsize
        if begin + size > nbytes:
            raise ValueError(f"{self.path}: {key} has {nbytes // src.itemsize} values, asked for {out.numel()} "
                             f"from row {first}")
        if size == 0:
            return out
        if out.dtype == src:
            self._pread_into(out.view(-1).view(torch.uint8), start + begin, size)
        elif src.is_floating_point and out.dtype.is_floating_point:
            flat = out.view(-1)
            if stage is None:
                stage = torch.empty(min(size, CHUNK_BYTES), dtype=torch.uint8)
            per = stage.numel() // src.itemsize
            for done in range(0, flat.numel(), per):
                n = min(per, flat.numel() - done)
                self._pread_into(stage[:n * src.itemsize], start + begin + done * src.itemsize, n * src.itemsize)
                flat[done:done + n].copy_(stage[:n * src.itemsize].view(src))
        else:
            raise ValueError(f"{self.path}: {key} is stored as {src}, cannot be read into {out.dtype}")
        self._drop_pages(start + begin, size)
        return out

    def same_bytes(self, key: str, other: TensorFile, other_key: str) -> bool:
        """Whether ``key`` here and ``other_key`` in ``other`` hold the same dtype, shape and bytes."""
        a, b = self._entries[key], other._entries[other_key]
        if a[:2] != b[:2]:
            return False
        left, right = (torch.empty(min(a[3], CHUNK_BYTES), dtype=torch.uint8) for _ in range(2))
        for done in range(0, a[3], CHUNK_BYTES):
            n = min(CHUNK_BYTES, a[3] - done)
            self._pread_into(left[:n], a[2] + done, n)
            other._pread_into(right[:n], b[2] + done, n)
            if not torch.equal(left[:n], right[:n]):
                return False
        self._drop_pages(a[2], a[3])
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()

    def _pread_into(self, buf: torch.Tensor, offset: int, nbytes: int) -> None:
        view, done = memoryview(buf.numpy()).cast("B"), 0
        while done < nbytes:
            got = os.preadv(self._fd, [view[done:nbytes]], offset + done)
            if got <= 0:
                raise CheckpointError(f"{self.path}: file ends early (truncated download?); re-download it")
            done += got

    def _drop_pages(self, offset: int, nbytes: int) -> None:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, offset, nbytes, os.POSIX_FADV_DONTNEED)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
