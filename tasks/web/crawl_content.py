"""What is in a response body: decoding it under a size cap, and the links of an HTML page or a
sitemap.

Bodies are read raw and decoded here with zlib under `max_page_bytes`, so a gzip bomb costs at
most that much memory. Sitemaps are read with a regex, never with an XML parser.
"""

import contextlib
import html
import re
import zlib
from urllib.parse import urljoin

import lxml.html
from lxml import etree

from tasks.web.crawl_policy import BAD_ENCODING, CrawlError

_LOC = re.compile(rb"<(?:[\w.-]+:)?loc\s*>(.*?)</(?:[\w.-]+:)?loc\s*>", re.S | re.I)
_SITEMAP_INDEX = re.compile(rb"<(?:[\w.-]+:)?sitemapindex[\s>]", re.I)
_CDATA = re.compile(r"^<!\[CDATA\[(.*)\]\]>$", re.S)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case and without parameters."""
    return (content_type or "").split(";")[0].strip().lower()


class Inflater:
    """Decode a body chunk by chunk, never holding more than `limit` + 1 decoded bytes.

    gzip and zlib streams are told apart by their headers (wbits 47); some servers send raw
    deflate as `deflate`, which is tried when the zlib header is wrong. Any other coding is
    refused: the crawler only asks for gzip and deflate.
    """

    def __init__(self, coding: str, limit: int) -> None:
        self.coding, self.limit = coding.strip().lower(), limit
        if self.coding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise CrawlError(BAD_ENCODING, f"Content-Encoding {coding!r} was not asked for")
        plain = self.coding in ("", "identity")
        self._z = None if plain else zlib.decompressobj(47)
        self._head = b""  # raw bytes before any output, read again as raw deflate if need be
        self._raw_deflate = False
        self._fed = False
        self.body = bytearray()

    def feed(self, chunk: bytes) -> bool:
        """Decode `chunk`; False once the decoded body passes `limit`."""
        if self._z is None:
            self.body += chunk[: self.limit + 1 - len(self.body)]
            return len(self.body) <= self.limit
        if not self.body:
            self._head += chunk
        self._fed = self._fed or bool(chunk)
        data = chunk
        while data and not self._z.eof:
            try:
                out = self._z.decompress(data, self.limit + 1 - len(self.body))
            except zlib.error as e:
                if self.coding != "deflate" or self.body or self._raw_deflate:
                    detail = f"cannot decode {self.coding} body: {e}"
                    raise CrawlError(BAD_ENCODING, detail) from None
                self._z, self._raw_deflate, data = zlib.decompressobj(-15), True, self._head
                continue
            self.body += out
            if len(self.body) > self.limit:
                return False
            data = self._z.unconsumed_tail
        return True

    def finish(self, complete: bool = True) -> bytes:
        """The decoded body; a compressed stream that stops short is refused when `complete`
        (an empty body is taken as it is)."""
        if complete and self._z is not None and self._fed and not self._z.eof:
            raise CrawlError(BAD_ENCODING, f"{self.coding} body ends before its stream does")
        return bytes(self.body[: self.limit])


def extract_links(body: bytes, url: str) -> list[str]:
    """`<a href>` and `<link rel=next>` targets of an HTML page, resolved against the page URL
    or its `<base href>`, in order and without repeats."""
    try:
        doc = lxml.html.document_fromstring(body)
    except (etree.ParserError, ValueError):
        return []
    base = url
    for href in doc.xpath("//base/@href")[:1]:
        with contextlib.suppress(ValueError):
            base = urljoin(url, str(href).strip())
    hrefs = doc.xpath("//a/@href | //link[contains(concat(' ', @rel, ' '), ' next ')]/@href")
    out = []
    for href in hrefs:
        try:
            out.append(urljoin(base, str(href).strip()))
        except ValueError:
            out.append(str(href))
    return list(dict.fromkeys(out))


def parse_sitemap(body: bytes) -> tuple[bool, list[str]]:
    """(is a sitemap index, its `<loc>` URLs). Read with a regex, so XML entities and DTDs are
    never resolved; only the five predefined entities and character references are decoded."""
    locs = []
    for raw in _LOC.findall(body):
        text = raw.decode("utf-8", "replace").strip()
        if m := _CDATA.match(text):
            text = m.group(1).strip()
        locs.append(html.unescape(text) if "&" in text else text)
    return _SITEMAP_INDEX.search(body) is not None, locs
