"""Reading table rows straight from the pages of an SQLite file that SQLite itself no longer opens.

SQLite's own recovery (the ``.recover`` command of its shell) walks every page of a damaged file,
takes each leaf page of a table b-tree on its own, and decodes the rows it holds; a damaged
header, interior page or neighbour does not stop it. This module does the same for the record
format of https://www.sqlite.org/fileformat2.html (leaf table pages, overflow chains, record
headers) over the main file and its write-ahead log (later WAL frames win, as a reader would see
them). It yields raw rows with no schema: the caller decides which rows it trusts (the cache
keeps only entries whose checksum matches their value, so a misread row is never used).

Pages on the free list (deleted rows) are skipped where the header still says which they are.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAGIC = b"SQLite format 3\x00"
WAL_MAGIC = (0x377F0682, 0x377F0683)
LEAF_TABLE = 0x0D
# Page sizes tried, most likely first, when the header that records it is gone.
PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    """SQLite's big-endian variable-length integer at ``pos``: (value, next position)."""
    value = 0
    for i in range(8):
        b = buf[pos + i]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos + i + 1
    return (value << 8) | buf[pos + 8], pos + 9


def header_page_size(data: bytes) -> int | None:
    """The page size the file header records, or None when the header is not a valid one."""
    if len(data) < 100 or data[:16] != MAGIC:
        return None
    size = struct.unpack(">H", data[16:18])[0]
    size = 65536 if size == 1 else size
    return size if size in PAGE_SIZES else None


def page_map(path: Path, page_size: int) -> dict[int, bytes]:
    """Page number -> page bytes: the main file's pages, replaced by the WAL's frames for the same page."""
    data = path.read_bytes() if path.exists() else b""
    pages = {n + 1: data[n * page_size : (n + 1) * page_size] for n in range(len(data) // page_size)}
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        w = wal.read_bytes()
        if len(w) >= 32 and struct.unpack(">I", w[:4])[0] in WAL_MAGIC and struct.unpack(">I", w[8:12])[0] == page_size:
            frame = 24 + page_size
            for off in range(32, len(w) - frame + 1, frame):
                pgno = struct.unpack(">I", w[off : off + 4])[0]
                if pgno:
                    pages[pgno] = w[off + 24 : off + frame]
    return pages


def free_pages(pages: dict[int, bytes]) -> set[int]:
    """The pages on the free list, as the header (page 1) records it; empty when it cannot say."""
    first = pages.get(1, b"")
    if header_page_size(first) is None:
        return set()
    trunk, free, seen = struct.unpack(">I", first[32:36])[0], set(), set()
    while trunk and trunk not in seen and trunk in pages:
        seen.add(trunk)
        page = pages[trunk]
        n = struct.unpack(">I", page[4:8])[0]
        free.add(trunk)
        for k in range(min(n, (len(page) - 8) // 4)):
            free.add(struct.unpack(">I", page[8 + 4 * k : 12 + 4 * k])[0])
        trunk = struct.unpack(">I", page[:4])[0]
    return free


def _payload(pages: dict[int, bytes], page: bytes, pos: int, size: int, usable: int) -> bytes:
    """A cell's payload of ``size`` bytes starting at ``pos``, following its overflow chain."""
    x = usable - 35
    if size <= x:
        return page[pos : pos + size]
    m = ((usable - 12) * 32 // 255) - 23
    k = m + (size - m) % (usable - 4)
    local = k if k <= x else m
    out = bytearray(page[pos : pos + local])
    nxt = struct.unpack(">I", page[pos + local : pos + local + 4])[0]
    seen = set()
    while len(out) < size:
        if not nxt or nxt in seen or nxt not in pages:
            raise ValueError("broken overflow chain")
        seen.add(nxt)
        over = pages[nxt]
        out += over[4:usable][: size - len(out)]
        nxt = struct.unpack(">I", over[:4])[0]
    return bytes(out)


def _record(payload: bytes) -> tuple[Any, ...]:
    """The values of one record (https://www.sqlite.org/fileformat2.html#record_format)."""
    header_size, pos = varint(payload, 0)
    types = []
    while pos < header_size:
        t, pos = varint(payload, pos)
        types.append(t)
    body, values = header_size, []
    for t in types:
        if t == 0:
            values.append(None)
        elif 1 <= t <= 6:
            n = (1, 2, 3, 4, 6, 8)[t - 1]
            values.append(int.from_bytes(payload[body : body + n], "big", signed=True))
            body += n
        elif t == 7:
            values.append(struct.unpack(">d", payload[body : body + 8])[0])
            body += 8
        elif t in (8, 9):
            values.append(t - 8)
        elif t >= 12:
            n = (t - 12) // 2
            raw = payload[body : body + n]
            values.append(raw.decode("utf-8") if t % 2 else raw)
            body += n
        else:
            raise ValueError(f"reserved serial type {t}")
        if body > len(payload):
            raise ValueError("record runs past its payload")
    return tuple(values)


def leaf_rows(pages: dict[int, bytes], page_size: int, skip: set[int] = frozenset()) -> Iterator[tuple[Any, ...]]:
    """Every row that decodes on a leaf table page (page 1's b-tree starts after the file header)."""
    usable = page_size  # ambiemo's files reserve no bytes per page
    for pgno in sorted(pages):
        if pgno in skip:
            continue
        page = pages[pgno]
        start = 100 if pgno == 1 else 0
        if len(page) < start + 8 or page[start] != LEAF_TABLE:
            continue
        n_cells = struct.unpack(">H", page[start + 3 : start + 5])[0]
        for c in range(n_cells):
            try:
                ptr = struct.unpack(">H", page[start + 8 + 2 * c : start + 10 + 2 * c])[0]
                size, pos = varint(page, ptr)
                _, pos = varint(page, pos)  # the rowid
                yield _record(_payload(pages, page, pos, size, usable))
            except (ValueError, IndexError, struct.error, UnicodeDecodeError):
                continue  # a damaged cell: the others on the page may still be whole


def scan(path: Path) -> Iterator[tuple[int, Iterator[tuple[Any, ...]]]]:
    """(page size, rows) for the page size the header records, or for each likely one when it is gone."""
    with open(path, "rb") as f:
        head = f.read(100)
    known = header_page_size(head)
    for size in (known,) if known else PAGE_SIZES:
        pages = page_map(path, size)
        yield size, leaf_rows(pages, size, free_pages(pages))
