"""WARC and WET records to documents, with trafilatura for HTML.

In: a WARC/WET byte stream. Out: (byte offset, fields) per response, resource or conversion
record: doc_id (the WARC-Record-ID), url, title and text; or a drop reason for responses that
are not successful HTML pages. Request, metadata and warcinfo records are not documents.
"""

from collections.abc import Iterator
from typing import Any, BinaryIO

import trafilatura
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType

HTTP_STATUS = "ingest_warc_http_status"
NOT_HTML = "ingest_warc_not_html"
NO_TEXT = "ingest_warc_no_text"

_DOCUMENT_RECORDS = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def html_to_text(html: bytes, url: str | None) -> tuple[str | None, str | None]:
    """Main text and title of an HTML page (trafilatura, favouring precision)."""
    doc = trafilatura.bare_extraction(
        html, url=url, favor_precision=True, include_comments=False, with_metadata=True
    )
    if doc is None:
        return None, None
    return doc.text or None, doc.title or None


def _record_fields(record: WarcRecord) -> dict[str, Any]:
    url = (record.headers.get("WARC-Target-URI") or "").strip("<>") or None
    fields: dict[str, Any] = {"doc_id": record.record_id.strip("<>"), "url": url}
    body = record.reader.read()
    if record.record_type == WarcRecordType.conversion:
        return {**fields, "text": body.decode("utf-8", "replace")}
    http = record.http_headers
    if http is not None and http.status_code != 200:
        return {**fields, "_reason": HTTP_STATUS, "_detail": f"HTTP {http.status_code}"}
    content_type = (record.http_content_type or "").lower()
    if content_type not in _HTML_TYPES:
        return {**fields, "_reason": NOT_HTML, "_detail": content_type or "no content type"}
    text, title = html_to_text(body, url)
    if text is None:
        return {**fields, "_reason": NO_TEXT, "_detail": "extraction found no main text"}
    return {**fields, "text": text, "title": title}


def iter_warc(stream: BinaryIO) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (byte offset, fields) for each document record of a WARC or WET stream."""
    for record in ArchiveIterator(stream, record_types=_DOCUMENT_RECORDS, parse_http=True):
        yield record.stream_pos, _record_fields(record)
