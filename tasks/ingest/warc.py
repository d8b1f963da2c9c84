"""WARC, WET and WAT records to documents.

In: a WARC/WET/WAT byte stream. Out: (byte offset, fields) per document record: doc_id (the
WARC-Record-ID), url, title, date, declared_lang, extraction and text, or a drop/quarantine
reason.

- WARC `response` (and `resource`) records of HTML pages become text through `tasks.ingest.extract`
  (trafilatura in a worker process with time and size limits). Chunked transfer coding and
  gzip/deflate/br content coding are undone first, with the decoded size capped. Responses
  that are not 200, or not HTML, are dropped with a reason.
- WET `conversion` records are text already.
- WAT `metadata` records that describe a response carry the page's metadata but no text: they
  are dropped with `ingest_wat_no_text`, naming the page's title.
- `request`, `warcinfo` and other metadata records are not documents.
- A record of no known WARC-Type, or whose body is shorter than its Content-Length, is
  quarantined with `ingest_warc_bad_record`.

`date` is the date the page states (found by trafilatura), else the capture date (WARC-Date).

A record's offset is the byte where it starts in the file; in a gzipped file, the byte where its
gzip member starts, plus the number of records before it in that member (0 when each record is
a member of its own, as Common Crawl writes them). A gzipped file is read member by member, so
that a byte range of it can be read alone (`iter_warc_range`): a range reads each member that
starts in it, and the records that start in those members.
"""

import bisect
import json
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import Any, BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

from shards.schema import DOC_ID, DROPPED, EXTRACTION, QUARANTINED, TITLE, URL
from tasks.ingest.extract import Extractor, declared_language

HTTP_STATUS = "ingest_warc_http_status"
NOT_HTML = "ingest_warc_not_html"
BAD_ENCODING = "ingest_warc_bad_encoding"
WAT_NO_TEXT = "ingest_wat_no_text"
BAD_RECORD = "ingest_warc_bad_record"  # no known WARC-Type, or a body cut short

_RECORDS = (
    WarcRecordType.response
    | WarcRecordType.resource
    | WarcRecordType.conversion
    | WarcRecordType.metadata
)
# A missing or unknown WARC-Type: quarantined. fastwarc's own type filter would pass over a
# record without one in silence, so `iter_warc` filters by type itself.
_MALFORMED = (WarcRecordType.no_type, WarcRecordType.unknown)
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def dechunk(body: bytes) -> bytes:
    """Undo HTTP/1.1 chunked transfer coding (a body that breaks off keeps what came)."""
    out, pos = bytearray(), 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end < 0:
            break
        try:
            size = int(body[pos:end].split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise ValueError(f"bad chunk size at byte {pos}") from None
        if size == 0:
            break
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)


def decode_content(body: bytes, coding: str, limit: int) -> bytes:
    """Undo a Content-Encoding, keeping at most `limit + 1` bytes (so a bomb shows as too big).

    Raises:
        ValueError: for a coding refinery cannot undo, or a corrupt body.
    """
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompressobj(47).decompress(body, limit + 1)
        except zlib.error:
            if coding != "deflate":
                raise ValueError(f"corrupt {coding} body") from None
            return zlib.decompressobj(-15).decompress(body, limit + 1)
    if coding == "br":
        import brotli

        try:
            return brotli.Decompressor().process(body, output_buffer_limit=limit + 1)
        except (brotli.error, TypeError) as e:
            raise ValueError(f"corrupt br body: {e}") from None
    raise ValueError(f"unsupported Content-Encoding {coding!r}")


def _removed(kind: str, reason: str, detail: str) -> dict[str, Any]:
    return {"_kind": kind, "_reason": reason, "_detail": detail}


def _page_fields(record: WarcRecord, body: bytes, extractor: Extractor) -> dict[str, Any]:
    """The fields of a response or resource record: extracted text, or why there is none."""
    http = record.http_headers
    if http is not None and http.status_code != 200:
        return _removed(DROPPED, HTTP_STATUS, f"HTTP {http.status_code}")
    content_type = (record.http_content_type or "").lower()
    if http is None:  # a resource record: the WARC header names the type
        content_type = (record.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type not in _HTML_TYPES:
        return _removed(DROPPED, NOT_HTML, content_type or "no content type")
    if http is not None:
        try:
            if "chunked" in (http.get("Transfer-Encoding") or "").lower():
                body = dechunk(body)
            coding = http.get("Content-Encoding") or ""
            body = decode_content(body, coding, extractor.cfg.max_html_bytes)
        except ValueError as e:
            return _removed(QUARANTINED, BAD_ENCODING, str(e))
    page = extractor.extract(body, record.headers.get("WARC-Target-URI"))
    if page.reason is not None:
        kind = DROPPED if page.reason.endswith("no_text") else QUARANTINED
        return _removed(kind, page.reason, page.detail or "")
    language = page.declared_lang
    if language is None and http is not None:
        language = declared_language(b"", http.get("Content-Language"))
    return {
        "text": page.text,
        TITLE: page.title,
        "date": page.date,
        "declared_lang": language,
        EXTRACTION: page.method,
    }


def _wat_fields(body: bytes) -> dict[str, Any] | None:
    """A WAT record about a response: its title, dropped for want of text; None otherwise."""
    try:
        envelope = json.loads(body)["Envelope"]
    except (ValueError, KeyError, TypeError):
        return None
    if envelope.get("WARC-Header-Metadata", {}).get("WARC-Type") != "response":
        return None
    http = envelope.get("Payload-Metadata", {}).get("HTTP-Response-Metadata", {})
    title = http.get("HTML-Metadata", {}).get("Head", {}).get("Title")
    detail = f"WAT metadata only (title: {title!r}); read the WARC or WET for text"
    return {TITLE: title, **_removed(DROPPED, WAT_NO_TEXT, detail)}


def _malformed(record: WarcRecord, body: bytes) -> str | None:
    """Why a record cannot be trusted: fastwarc yields a record whose type it does not know,
    and one whose body ends before its Content-Length (a truncated file, or a Content-Length
    that swallowed the records after it), without an error."""
    if record.record_type in _MALFORMED:
        return f"WARC-Type {record.headers.get('WARC-Type')!r} is missing or unknown"
    length = record.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return f"Content-Length {length!r}: the record's header is cut short or corrupt"
    if len(body) < record.content_length:
        return f"truncated: {len(body)} of {record.content_length} bytes"
    return None


def record_fields(record: WarcRecord, extractor: Extractor) -> dict[str, Any] | None:
    """A document's fields from one record, or None for a record that is not a document."""
    headers = record.headers
    url = (headers.get("WARC-Target-URI") or "").strip("<>") or None
    capture = (headers.get("WARC-Date") or "")[:10] or None
    base = {DOC_ID: (headers.get("WARC-Record-ID") or "").strip("<>") or None, URL: url}
    body = record.reader.read()
    if (problem := _malformed(record, body)) is not None:
        return {**base, **_removed(QUARANTINED, BAD_RECORD, problem)}
    if record.record_type == WarcRecordType.metadata:
        fields = _wat_fields(body) if "json" in (headers.get("Content-Type") or "") else None
        return None if fields is None else {**base, **fields}
    if record.record_type == WarcRecordType.conversion:
        fields = {"text": body.decode("utf-8", "replace")}
    else:
        fields = _page_fields(record, body, extractor)
    return {**base, **fields, "date": fields.get("date") or capture}


def iter_warc(
    stream: BinaryIO, extractor: Extractor, offset_of: Callable[[int], int] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (offset, fields) for each document record of a WARC, WET or WAT stream: the
    offset is the record's position in the stream, or what `offset_of` makes of it (called
    once for every record, in order)."""
    for record in ArchiveIterator(stream, record_types=WarcRecordType.any_type, parse_http=True):
        pos = record.stream_pos if offset_of is None else offset_of(record.stream_pos)
        if not (record.record_type & _RECORDS or record.record_type in _MALFORMED):
            continue
        if (fields := record_fields(record, extractor)) is not None:
            yield pos, fields


GZIP_MAGIC = b"\x1f\x8b\x08"  # a gzip member's first bytes (deflate)
_BLOCK = 1 << 16


def _inflate(raw: BinaryIO, pos: int) -> Generator[bytes, None, int]:
    """The inflated bytes of the gzip member at byte `pos` of `raw`, in chunks of at most
    1 MiB (so a bomb cannot expand at once); returns the byte after the member. `raw` is
    sought before each read, so other reads of it may come between two chunks.

    Raises:
        EOFError: if the file ends inside the member.
        zlib.error: if there is no gzip member at `pos`, or it is corrupt.
    """
    member = zlib.decompressobj(31)
    while not member.eof:
        data = member.unconsumed_tail
        if not data:
            raw.seek(pos)
            if not (data := raw.read(_BLOCK)):
                raise EOFError(f"the gzip member at byte {pos} is cut short")
            pos += len(data)
        if out := member.decompress(data, 16 * _BLOCK):
            yield out
    return pos - len(member.unused_data)


def _starts_record(raw: BinaryIO, pos: int) -> bool:
    """Whether a gzip member that starts a WARC record begins at byte `pos`: it inflates to
    b"WARC/", and if it ends, another member or the end of the file follows. Bytes 1f 8b 08
    also occur by chance in compressed data, and a gzip file served as a page (kept as is in a
    stored deflate block) has members of its own."""
    member, head = _inflate(raw, pos), b""
    try:
        while len(head) < 5:
            head += next(member)
    except (StopIteration, EOFError, zlib.error):
        return False
    if not head.startswith(b"WARC/"):
        return False
    try:
        while True:
            next(member)
    except StopIteration as done:
        raw.seek(done.value)
        return raw.read(2) in (b"", GZIP_MAGIC[:2])
    except (EOFError, zlib.error):
        return True  # a record's member, broken: the range that reads it quarantines it


def find_member(raw: BinaryIO, start: int, end: int | None) -> int | None:
    """The first byte in [start, end) where a gzip member that starts a WARC record begins
    (`_starts_record`), or None if there is none."""
    pos = start
    while end is None or pos < end:
        raw.seek(pos)
        if len(block := raw.read(_BLOCK)) < len(GZIP_MAGIC):
            return None
        at = block.find(GZIP_MAGIC)
        while at >= 0 and (end is None or pos + at < end):
            if _starts_record(raw, pos + at):
                return pos + at
            at = block.find(GZIP_MAGIC, at + 1)
        pos += len(block) - len(GZIP_MAGIC) + 1  # a match may straddle two blocks
    return None


class GzipMembers:
    """The inflated gzip members of a WARC file, from the member at byte `start` up to the
    first member at or after `end` that starts a record (it and those after it are the next
    range's), as a stream for fastwarc. A member that does not start a record (the rest of one
    that spans members) is read with the record it continues. An error ends the stream early
    and waits in `error`, so that fastwarc still yields every record that came whole."""

    def __init__(self, raw: BinaryIO, start: int, end: int | None) -> None:
        self.error: Exception | None = None
        self._chunks = self._members(raw, start, end)
        self._buf, self._pos, self._inflated = bytearray(), 0, 0
        self._starts: list[int] = []  # where each member starts in the inflated stream
        self._offsets: list[int] = []  # ... and in the file
        self._member, self._seen = -1, 0  # for `offset_of`: the last record's member, index

    def _members(self, raw: BinaryIO, pos: int, end: int | None) -> Iterator[bytes]:
        while True:
            raw.seek(pos)
            if not raw.read(1) or (end is not None and pos >= end and _starts_record(raw, pos)):
                return
            self._starts.append(self._inflated)
            self._offsets.append(pos)
            pos = yield from _inflate(raw, pos)

    def read(self, size: int = -1) -> bytes:
        while self.error is None and (size < 0 or len(self._buf) < size):
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            except (OSError, EOFError, zlib.error) as e:
                self.error = e
                break
            self._buf += chunk
            self._inflated += len(chunk)
        n = len(self._buf) if size < 0 else min(size, len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._pos += n
        return out

    def tell(self) -> int:
        return self._pos

    def offset_of(self, pos: int) -> int:
        """The offset of the record at `pos` of the inflated stream (see the module docstring);
        called once for every record, in order."""
        member = bisect.bisect_right(self._starts, pos) - 1
        self._seen = self._seen + 1 if member == self._member else 0
        self._member = member
        return self._offsets[member] + self._seen


def iter_warc_range(
    raw: BinaryIO, start: int, end: int | None, extractor: Extractor
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (offset, fields) for each document record of a WARC, WET or WAT file that starts
    in its bytes [start, end) (`end` None: to the end of the file): the records of each gzip
    member that starts there. A file that is not gzipped is read whole by the range that
    starts at 0 (it is not split, see `tasks.ingest.inputs`).

    Raises:
        OSError, EOFError, zlib.error: for a file that breaks off or is corrupt, after the
            records read whole before the break.
    """
    if start == 0 and raw.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
        raw.seek(0)
        yield from iter_warc(raw, extractor)
        return
    first = 0 if start == 0 else find_member(raw, start, end)
    if first is None:
        return
    members = GzipMembers(raw, first, end)
    yield from iter_warc(members, extractor, members.offset_of)
    if members.error is not None:
        raise members.error
