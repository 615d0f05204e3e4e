"""The large bodies, made without holding them: a gzip bomb built from one compressed block,
list answers of any size generated piece by piece, JSON nested as deep as asked."""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Iterator

BLOCK = 1 << 20  # the bomb repeats one compressed block of this many inflated bytes
PIECE = 64 * 1024  # generated bodies go out in pieces of about this size
TIME = "2026-01-01T00:00:00.000000Z"
LIST_START = b'{"data":['
LIST_END = b'],"next_cursor":null}'
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # no name, no mtime, best compression


@functools.lru_cache(maxsize=8)
def gzip_bomb(size: int, prefix: bytes, filler: bytes) -> bytes:
    """A gzip member that inflates to ``size`` bytes: ``prefix``, then ``filler`` repeated.

    After a full flush, deflate forgets its history, so every block of the same bytes
    compresses to the same bytes: one block is compressed and repeated, and only the CRC
    walks the whole length (a 1 GiB bomb builds in about a second, its inflated bytes
    never held). Cached: a test session asks for the same few bombs again and again.
    """
    head = prefix[:size]
    block = filler * max(1, BLOCK // len(filler))
    blocks, rest = divmod(size - len(head), len(block))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [GZIP_HEADER, deflate.compress(head), deflate.flush(zlib.Z_FULL_FLUSH)]
    crc = zlib.crc32(head)
    compressed = b""
    for number in range(blocks):
        if number < 2:  # the first two show that a block compresses the same each time
            previous = compressed
            compressed = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
            if number == 1 and compressed != previous:
                raise RuntimeError("this zlib does not compress a block the same twice")
        parts.append(compressed)
        crc = zlib.crc32(block, crc)
    parts += [deflate.compress(block[:rest]), deflate.flush()]
    crc = zlib.crc32(block[:rest], crc)
    parts.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(parts)


def _record(number: int, pad: int, *, big: int = 0) -> bytes:
    start = f'{{"id":"huge-{number:09d}","updated_at":"{TIME}","deleted":false,"pad":"'
    return start.encode() + b"x" * pad + (b'","big":"' + b"y" * big if big else b"") + b'"}'


RECORD_SIZE = 1024
PAD = RECORD_SIZE - len(_record(0, 0))


def huge_list(size: int | None, field: int | None) -> tuple[int, Iterator[bytes]]:
    """A valid list answer of about ``size`` bytes, in records of 1 KiB with ids in order;
    with ``field``, its first record also holds a field ``big`` of that many bytes. Answers
    the exact length and the body's pieces."""
    big_extra = len(_record(0, PAD, big=1)) - RECORD_SIZE - 1 + field if field else 0
    wanted = size or 0
    room = wanted - len(LIST_START) - len(LIST_END) - big_extra
    count = max(1, (room + 1) // (RECORD_SIZE + 1))
    length = len(LIST_START) + len(LIST_END) + count * (RECORD_SIZE + 1) - 1 + big_extra
    return length, _huge_pieces(count, field or 0)


def _huge_pieces(count: int, field: int) -> Iterator[bytes]:
    yield LIST_START
    first = _record(0, PAD, big=1)
    if field:
        cut = len(first) - 3  # before the one "y" and the closing '"}'
        yield first[:cut]
        for start in range(0, field, PIECE):
            yield b"y" * min(PIECE, field - start)
        yield b'"}'
    else:
        yield _record(0, PAD)
    batch = []
    for number in range(1, count):
        batch.append(b"," + _record(number, PAD))
        if len(batch) == PIECE // RECORD_SIZE:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)
    yield LIST_END


def deep_list(depth: int, container: str) -> bytes:
    """A list answer whose one record holds a value nested ``depth`` levels deep."""
    if container == "object":
        nested = b'{"a":' * depth + b"null" + b"}" * depth
    else:
        nested = b"[" * depth + b"]" * depth
    record = f'{{"id":"deep","updated_at":"{TIME}","deleted":false,"nested":'.encode()
    return LIST_START + record + nested + b"}" + LIST_END
