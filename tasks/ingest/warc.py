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
"""

import json
import zlib
from collections.abc import Iterator
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


def iter_warc(stream: BinaryIO, extractor: Extractor) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (byte offset, fields) for each document record of a WARC, WET or WAT stream."""
    for record in ArchiveIterator(stream, record_types=WarcRecordType.any_type, parse_http=True):
        if not (record.record_type & _RECORDS or record.record_type in _MALFORMED):
            continue
        if (fields := record_fields(record, extractor)) is not None:
            yield record.stream_pos, fields
