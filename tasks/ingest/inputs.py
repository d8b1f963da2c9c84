"""Ingest's inputs: which files the input URIs name, in which format, grouped into partitions.

Inputs are local paths, directories, globs or any fsspec URL (`s3://...` with s3fs installed);
a file's format is known by its extension.

A file larger than a partition (and than `MIN_PIECE_BYTES`) is cut into pieces, byte ranges
of about a partition each, when its format lets a reader start in the middle: uncompressed
JSONL (a piece reads the lines that start in it, `first_line`), Parquet (the row groups that
start in it, `row_group_start`) and gzipped WARC, WET and WAT written one gzip member per record,
as Common Crawl writes them (the members that start in it, `tasks.ingest.warc`). The plan holds
only nominal cut points, so planning reads no file; the reader finds the records' boundaries.
Compressed JSONL, text and uncompressed WARC (where a record's start cannot be told from
`WARC/1.0` in a page's body without reading from the start) are read whole.
"""

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

import fsspec
import pyarrow.parquet as pq

FORMATS = {
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".jsonl.zst": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
    ".txt.gz": "text",
    ".warc": "warc",
    ".warc.gz": "warc",
    ".wet": "warc",
    ".wet.gz": "warc",
    ".wat": "warc",
    ".wat.gz": "warc",
}


# The extensions of the files that can be read in byte ranges (see the module docstring).
SPLITTABLE = (".jsonl", ".ndjson", ".parquet", ".warc.gz", ".wet.gz", ".wat.gz")
# Smaller pieces cost more in tasks and requests than they win in parallel reading.
MIN_PIECE_BYTES = 1 << 20
PIECE_BLOCK_BYTES = 4 << 20  # a piece's read block (s3fs reads ahead 50 MiB by default)


def format_of(path: str) -> str | None:
    """The input format of `path` by its extension, or None if refinery cannot read it."""
    name = path.lower()
    return next((fmt for ext, fmt in FORMATS.items() if name.endswith(ext)), None)


def splittable(path: str) -> bool:
    """Whether the file at `path` can be read in byte ranges, by its extension."""
    return path.lower().endswith(SPLITTABLE)


@dataclass(frozen=True)
class InputFile:
    """One input file: its URI, a stable name for ids (relative to its input root), size."""

    uri: str
    name: str
    size: int
    version: str  # mtime or ETag: part of the ingest fingerprint, so changed files are re-read


@dataclass(frozen=True)
class Piece:
    """A byte range [start, end) of an input file, read by one ingest task: the records that
    start in it are its own (`end` None: to the end of the file). A whole file is `Piece(f)`."""

    file: InputFile
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        if self.start == 0 and self.end is None:
            return
        empty = self.start < 0 or (self.end is not None and self.end <= self.start)
        if empty or not splittable(self.file.uri):
            raise ValueError(f"no piece {self.start}-{self.end} of {self.file.uri} can be read")

    @property
    def size(self) -> int:
        """The bytes of the range (the file's size for a whole file)."""
        return (self.file.size if self.end is None else self.end) - self.start

    def owns(self, offset: int) -> bool:
        """Whether a record that starts at byte `offset` is this piece's."""
        return self.start <= offset and (self.end is None or offset < self.end)


@dataclass(frozen=True)
class Partition:
    """A group of input pieces (whole files, or ranges of large ones) read by one ingest task."""

    name: str
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        """Input bytes: the pieces' sizes."""
        return sum(p.size for p in self.pieces)


def open_piece(p: Piece, compression: str | None) -> AbstractContextManager[BinaryIO]:
    """`p`'s file, to open for reading; a piece of a file (never compressed) is read in small
    blocks, so that it reads little past its end."""
    if p == Piece(p.file):
        return fsspec.open(p.file.uri, "rb", compression=compression)
    fs, path = fsspec.core.url_to_fs(p.file.uri)
    return fs.open(path, "rb", block_size=PIECE_BLOCK_BYTES)


def first_line(stream: BinaryIO, start: int, end: int | None) -> int | None:
    """Where the first line of a JSONL stream that starts in [start, end) does (None: none
    does), for `start` > 0: after the first newline at or after `start - 1`. Reads no further
    than `end`, and leaves the stream there."""
    pos = start - 1
    stream.seek(pos)
    while end is None or pos < end - 1:
        chunk = stream.read(1 << 16 if end is None else min(1 << 16, end - 1 - pos))
        if not chunk:
            return None
        if (newline := chunk.find(b"\n")) >= 0:
            stream.seek(pos + newline + 1)
            return pos + newline + 1
        pos += len(chunk)
    return None


def row_group_start(group: pq.RowGroupMetaData) -> int:
    """The byte where a Parquet row group starts (its first page): the piece it starts in
    reads it."""
    chunks = (group.column(i) for i in range(group.num_columns))
    return min(
        (c.has_dictionary_page and c.dictionary_page_offset) or c.data_page_offset for c in chunks
    )


def discover(uris: list[str]) -> tuple[list[InputFile], list[str]]:
    """Expand input URIs (files, directories, globs) into readable files.

    Returns:
        The readable files, sorted by URI, and the URIs of files skipped for their extension.

    Raises:
        FileNotFoundError: naming the first input that matches nothing.
    """
    found: dict[str, InputFile] = {}
    ignored: list[str] = []
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri)
        if any(c in path for c in "*?["):
            paths = fs.glob(path)
        elif fs.isdir(path):
            paths = fs.find(path)
        elif fs.exists(path):
            paths = [path]
        else:
            paths = []
        if not paths:
            raise FileNotFoundError(f"input not found: {uri}")
        root = path.rstrip("/").rsplit("/", 1)[0] if fs.isdir(path) else ""
        for p in sorted(paths):
            if format_of(p) is None:
                ignored.append(fs.unstrip_protocol(p))
                continue
            info = fs.info(p)
            version = str(info.get("mtime") or info.get("LastModified") or info.get("ETag") or "")
            name = p[len(root) + 1 :] if root and p.startswith(root + "/") else p.rsplit("/", 1)[-1]
            full = fs.unstrip_protocol(p)
            found[full] = InputFile(full, name, int(info.get("size") or 0), version)
    return sorted(found.values(), key=lambda f: f.uri), ignored


def split_file(f: InputFile, target: int) -> list[Piece]:
    """`f` cut into equal pieces of at most `target` bytes if it is larger and `splittable`;
    else one piece, the whole file."""
    if f.size <= target or not splittable(f.uri):
        return [Piece(f)]
    n = -(-f.size // target)
    cuts = [f.size * i // n for i in range(n)]
    return [Piece(f, a, b) for a, b in zip(cuts, [*cuts[1:], None], strict=True)]


def plan_partitions(
    files: list[InputFile],
    partition_bytes: int,
    min_partitions: int = 1,
    min_piece_bytes: int = MIN_PIECE_BYTES,
) -> list[Partition]:
    """Group files, in order, into partitions of about a target size: `partition_bytes`, or
    less where that makes fewer than `min_partitions`. Files larger than the target are cut into
    pieces (`split_file`) where their format allows, so that every worker gets work.

    Args:
        files: the input files, in order (`discover`).
        partition_bytes: the most input bytes a partition should hold.
        min_partitions: the fewest partitions wanted; reached unless files that cannot be cut
            or `min_piece_bytes` stand in the way.
        min_piece_bytes: no file is cut into pieces smaller than this.

    Returns:
        Partitions named p00000, p00001, ...; the same files and arguments give the same plan,
        and files no larger than the target are grouped whole, as they were before any cuts.

    Raises:
        ValueError: if `partition_bytes` or `min_partitions` is below 1.
    """
    if min(partition_bytes, min_partitions, min_piece_bytes) < 1:
        raise ValueError(
            f"`partition_bytes` ({partition_bytes}), `min_partitions` ({min_partitions}) and "
            f"`min_piece_bytes` ({min_piece_bytes}) must be at least 1"
        )
    total = sum(f.size for f in files)
    target = max(1, min(partition_bytes, -(-total // min_partitions)))
    groups: list[list[Piece]] = []
    size = 0
    cut = max(target, min_piece_bytes)
    for piece in (p for f in files for p in split_file(f, cut)):
        if not groups or size + piece.size > target:
            groups.append([])
            size = 0
        groups[-1].append(piece)
        size += piece.size
    return [Partition(f"p{i:05d}", tuple(g)) for i, g in enumerate(groups)]
