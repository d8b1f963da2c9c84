"""Ingest: read raw inputs into documents.

In: input pieces (`tasks.ingest.inputs`: whole files, or byte ranges of large ones) of input
URIs (local paths, directories, globs, or any fsspec URL such as s3://commoncrawl/... with s3fs
installed) of JSONL (.jsonl, .jsonl.gz, .jsonl.zst), Parquet, plain text (.txt, .txt.gz) and
WARC/WET/WAT (.warc, .warc.gz, .wet.gz, .wat.gz; see `tasks.ingest.warc`).
Out: doc_id, source, url, title, date, declared_lang, extraction (the settings that found an
HTML page's text; null for other records), text, raw. `text` is null and `raw` holds
the bytes when a record is not valid UTF-8 (normalize decodes or quarantines it). `source` is
`<uri>:<offset>`, and a record without an id gets a hash of its file name and offset. The
offset is the byte where the record starts (a JSONL line, in the decompressed text of a
compressed file; a WARC record, see `tasks.ingest.warc`) or its row (Parquet, counted over all
row groups). A piece reads the records that start in its range, finding the first from its
nominal start, so a file read in pieces gives the same rows, offsets and ids as read whole.
"""

import json
import re
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
import zstandard
from prefect import task
from pydantic import BaseModel, Field

from shards.schema import (
    DATE,
    DECLARED_LANG,
    DOC_ID,
    EXTRACTION,
    QUARANTINED,
    SOURCE,
    TEXT,
    TITLE,
    URL,
)
from shards.workdir import StageDir
from tasks.ingest.extract import ExtractConfig, Extractor, shared_extractor
from tasks.ingest.inputs import (
    MIN_PIECE_BYTES,
    InputFile,
    Partition,
    Piece,
    first_line,
    format_of,
    open_piece,
    row_group_start,
)
from tasks.partition import run_partitions
from tasks.records import StageResult, StageStats, ledger_rows

STAGE = "ingest"


class IngestConfig(BaseModel, frozen=True, extra="forbid"):
    """How inputs are read and grouped into partitions."""

    text_field: str = "text"
    id_field: str = "id"
    partition_bytes: int = Field(64 << 20, gt=0, description="input bytes per partition")
    # At least this many partitions per worker slot (0: by bytes only); no piece of a file
    # smaller than min_piece_bytes.
    partitions_per_worker: int = Field(4, ge=0)
    min_piece_bytes: int = Field(MIN_PIECE_BYTES, gt=0)
    extract: ExtractConfig = ExtractConfig()


BAD_JSON = "ingest_bad_json"
NOT_AN_OBJECT = "ingest_not_an_object"
MISSING_TEXT = "ingest_missing_text"
BAD_TEXT_TYPE = "ingest_bad_text_type"
BAD_SCHEMA = "ingest_bad_schema"
UNREADABLE = "ingest_unreadable"

# Errors that end the reading of a file: what was read before stays, the rest is quarantined.
READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    zstandard.ZstdError,
    pa.ArrowException,
    RuntimeError,
)


def derived_id(name: str, offset: int) -> str:
    """A stable doc_id for a record without one: a hash of its file name and offset."""
    return xxhash.xxh3_64_hexdigest(f"{name}:{offset}".encode("utf-8", "surrogateescape"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode(value: str) -> str:
    """`value` with each lone surrogate replaced by U+FFFD. JSON can hold one (`\\ud800`), and
    invalid UTF-8 bytes read with surrogateescape (in a JSON line or a file name) become them;
    Arrow strings must be valid UTF-8, so one in an id or a URL would fail the partition."""
    return _SURROGATE.sub("\ufffd", value)


def _row(f: InputFile, offset: int, **fields: Any) -> dict[str, Any]:
    doc_id = fields.pop(DOC_ID, None)
    row = {
        DOC_ID: str(doc_id) if doc_id is not None else derived_id(f.name, offset),
        SOURCE: f"{f.uri}:{offset}",
        **fields,
    }
    # `text` is valid already (`_text_fields`), and the longest: it is not scanned twice.
    return {k: _unicode(v) if isinstance(v, str) and k != TEXT else v for k, v in row.items()}


def _text_fields(value: str) -> dict[str, Any]:
    """`text` if `value` encodes as UTF-8; else its bytes as `raw`, for normalize to decode."""
    try:
        value.encode("utf-8")
        return {TEXT: value}
    except UnicodeEncodeError:
        pass
    try:
        return {TEXT: None, "raw": value.encode("utf-8", "surrogateescape")}
    except UnicodeEncodeError:  # a lone surrogate escape stands for no byte: U+FFFD
        return {TEXT: _unicode(value)}


def _removed(kind: str, reason: str, detail: str) -> dict[str, Any]:
    return {"_kind": kind, "_reason": reason, "_detail": detail}


def _from_mapping(f: InputFile, offset: int, obj: Any, cfg: IngestConfig) -> dict[str, Any]:
    if not isinstance(obj, dict):
        return _row(f, offset, **_removed(QUARANTINED, NOT_AN_OBJECT, type(obj).__name__))
    doc_id, text = obj.get(cfg.id_field), obj.get(cfg.text_field)
    meta = {URL: obj.get("url"), TITLE: obj.get("title"), DATE: obj.get("date")}
    meta = {k: v if isinstance(v, str) else None for k, v in meta.items()}
    if text is None:
        detail = f"no {cfg.text_field!r} field" if cfg.text_field not in obj else "text is null"
        return _row(f, offset, doc_id=doc_id, **_removed(QUARANTINED, MISSING_TEXT, detail))
    if not isinstance(text, str):
        detail = f"text is {type(text).__name__}, not a string"
        return _row(f, offset, doc_id=doc_id, **_removed(QUARANTINED, BAD_TEXT_TYPE, detail))
    return _row(f, offset, doc_id=doc_id, **meta, **_text_fields(text))


def iter_lines(stream: BinaryIO, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Lines of a byte stream, read in chunks: works on every decompressor (zstd's has no
    readline), and a stream that breaks off still yields every complete line before the break."""
    read = getattr(stream, "read1", stream.read)  # read1: what is there now, not a full chunk
    pending: list[bytes] = []  # pieces of the unfinished line, joined once it ends
    while chunk := read(chunk_size):
        *lines, last = chunk.split(b"\n")
        if lines:
            lines[0] = b"".join([*pending, lines[0]])
            yield from lines
            pending = []
        pending.append(last)
    if tail := b"".join(pending):
        yield tail


class ZstdStream:
    """A .zst byte stream, decompressed frame by frame. zstandard's `stream_reader` ends
    quietly where a truncated file ends, which would lose the rest of the file without a
    trace; this raises EOFError there. Input goes in 1 KiB at a time, so that highly
    compressed data cannot expand into more than a few MB at once."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self._frame, self._in_frame = raw, self._new_frame(), False
        self._out = bytearray()

    @staticmethod
    def _new_frame() -> Any:
        return zstandard.ZstdDecompressor().decompressobj()

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left when negative).

        Raises:
            EOFError: when the input ends inside a frame.
        """
        while size < 0 or len(self._out) < size:
            if not (data := self.raw.read(1 << 10)):
                # A chunked read hands out what came before the break first.
                if self._in_frame and (size < 0 or not self._out):
                    raise EOFError("zstd stream ended before the end of its frame")
                break
            while data:  # a frame may end inside `data`; the next one starts after it
                self._out += self._frame.decompress(data)
                self._in_frame = not self._frame.eof
                data = b"" if self._in_frame else self._frame.unused_data
                if not self._in_frame:
                    self._frame = self._new_frame()
        n = len(self._out) if size < 0 else min(size, len(self._out))
        out = bytes(self._out[:n])
        del self._out[:n]
        return out


def jsonl_lines(
    stream: BinaryIO, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """(byte position, line) of each line of a JSONL stream that starts in [start, end): a
    range that starts inside a line leaves it to the range before, which reads past its own end
    to finish it. The stream must be at `start`, or seekable when `start` > 0."""
    if start > 0 and (start := first_line(stream, start, end)) is None:
        return
    for line in iter_lines(stream):
        if end is not None and start >= end:
            return
        yield start, line
        start += len(line) + 1


Reader = Callable[[Piece, BinaryIO, IngestConfig, Extractor], Iterator[dict[str, Any]]]


def read_jsonl(p: Piece, stream: BinaryIO, cfg: IngestConfig, _: Extractor) -> Iterator[dict]:
    for offset, line in jsonl_lines(stream, p.start, p.end):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError) as e:
            detail = f"{p.file.uri}:{offset}: {e}"
            yield _row(p.file, offset, **_removed(QUARANTINED, BAD_JSON, detail))
            continue
        yield _from_mapping(p.file, offset, obj, cfg)


def read_parquet(p: Piece, stream: BinaryIO, cfg: IngestConfig, _: Extractor) -> Iterator[dict]:
    pfile = pq.ParquetFile(stream)
    if cfg.text_field not in pfile.schema_arrow.names:
        detail = f"{p.file.uri}: no {cfg.text_field!r} column in {pfile.schema_arrow.names}"
        if p.start == 0:  # one row for the file, from the piece that starts it
            yield _row(p.file, 0, **_removed(QUARANTINED, BAD_SCHEMA, detail))
        return
    first = 0  # the row index of the row group's first row, across the file
    for i in range(pfile.metadata.num_row_groups):
        group = pfile.metadata.row_group(i)
        if p.owns(row_group_start(group)):
            batches = pfile.iter_batches(batch_size=4096, row_groups=[i])
            rows = (obj for batch in batches for obj in batch.to_pylist())
            for offset, obj in enumerate(rows, first):
                yield _from_mapping(p.file, offset, obj, cfg)
        first += group.num_rows


def read_text(p: Piece, stream: BinaryIO, cfg: IngestConfig, _: Extractor) -> Iterator[dict]:
    data = stream.read()
    try:
        yield _row(p.file, 0, **{TEXT: data.decode("utf-8")})
    except UnicodeDecodeError:
        yield _row(p.file, 0, **{TEXT: None, "raw": data})


def read_warc(p: Piece, stream: BinaryIO, cfg: IngestConfig, ex: Extractor) -> Iterator[dict]:
    from tasks.ingest.warc import iter_warc_range

    for offset, fields in iter_warc_range(stream, p.start, p.end, ex):
        yield _row(p.file, offset, **fields)


READERS: dict[str, Reader] = {
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "text": read_text,
    "warc": read_warc,
}


def read_file(
    f: InputFile | Piece, cfg: IngestConfig, ex: Extractor | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one row per record of `f`, a whole file or the records that start in a piece;
    a read error quarantines the rest. HTML pages are extracted by `ex`, or by an extractor of
    this call's own."""
    if ex is None:
        with Extractor(cfg.extract) as own:
            yield from read_file(f, cfg, own)
        return
    p = f if isinstance(f, Piece) else Piece(f)
    fmt = format_of(p.file.uri)
    zstd = p.file.uri.lower().endswith(".zst")
    compression = None if fmt in ("parquet", "warc") or zstd else "infer"
    n = 0
    try:
        with open_piece(p, compression) as raw:
            stream = ZstdStream(raw) if zstd else raw
            for n, row in enumerate(READERS[fmt](p, stream, cfg, ex), 1):  # noqa: B007
                yield row
    except READ_ERRORS as e:
        span = f" from byte {p.start}" if p.start else ""
        detail = f"{p.file.uri}: {type(e).__name__}: {e} (after {n} records{span})"
        # Offset -1 - (records read), made unique among a file's pieces by the piece's start.
        yield _row(p.file, -1 - p.start - n, **_removed(QUARANTINED, UNREADABLE, detail))


COLUMNS = {
    DOC_ID: pl.String,
    SOURCE: pl.String,
    URL: pl.String,
    TITLE: pl.String,
    DATE: pl.String,
    DECLARED_LANG: pl.String,
    EXTRACTION: pl.String,
    TEXT: pl.String,
    "raw": pl.Binary,
    "_kind": pl.String,
    "_reason": pl.String,
    "_detail": pl.String,
}


def read_records(pieces: tuple[InputFile | Piece, ...], cfg: IngestConfig) -> pl.DataFrame:
    """Every record of `pieces` (or whole files), with `_kind`, `_reason` and `_detail` set on
    the bad ones."""
    ex = shared_extractor(cfg.extract)  # its worker starts on the first HTML page
    rows = [row for p in pieces for row in read_file(p, cfg, ex)]
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


def split_records(df: pl.DataFrame) -> StageResult:
    """Records (`read_records`) into kept documents and quarantined/dropped ledger rows."""
    bad = df.filter(pl.col("_reason").is_not_null())
    return StageResult(
        kept=df.filter(pl.col("_reason").is_null()).drop("_kind", "_reason", "_detail"),
        removed=ledger_rows(bad, STAGE, pl.col("_kind"), pl.col("_reason"), pl.col("_detail")),
    )


def read_partition(pieces: tuple[InputFile | Piece, ...], cfg: IngestConfig) -> StageResult:
    """Read every record of `pieces` (or whole files) into kept documents and
    quarantined/dropped ledger rows."""
    return split_records(read_records(pieces, cfg))


@task(name="ingest")
def ingest(parts: list[Partition], out: StageDir, cfg: IngestConfig) -> StageStats:
    """Read each partition of `parts` (input pieces) into `out`; a partition's input bytes
    are its pieces' sizes."""
    reads = [partial(read_records, part.pieces, cfg) for part in parts]
    sizes = [sum(p.size for p in part.pieces) for part in parts]
    names = [part.name for part in parts]
    return run_partitions(None, out, names, split_records, reads=reads, sizes=sizes)
