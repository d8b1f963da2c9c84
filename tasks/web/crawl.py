"""Crawl: fetch web pages politely and safely into WARC files, resumably.

In: seed URLs (`CrawlConfig.seeds`). Out, under the output directory:
- `warc/crawl-NNNNN.warc.gz`: a warcinfo record, then one response record per page (the final
  URL after redirects, the status line and headers, the decoded body). The file being written is
  `crawl-NNNNN.warc.gz.part`; only finished `.warc.gz` files are inputs for `ingest`.
- `state.sqlite`: the frontier and fetched set, the robots.txt cache and the WARC bookkeeping
  that let a killed crawl resume without fetching a page twice.
- `ledger.arrow` (`LEDGER_SCHEMA`): every refused (dropped) or failed (quarantined) URL.
- `crawl.json`: the stage's stats and a few totals.

This module holds the config, the reasons, the pure URL, address and HTML functions and the
on-disk state; `tasks.web.crawl_fetch` holds the network side (safe fetches, politeness, the loop).
"""

import asyncio
import contextlib
import html
import io
import ipaddress
import logging
import os
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import lxml.html
import pyarrow as pa
from lxml import etree
from prefect import get_run_logger, task
from pydantic import BaseModel, Field, field_validator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from shards.schema import DROPPED, LEDGER_SCHEMA, QUARANTINED
from shards.writer import remove_temp_files, write_json, write_table
from tasks.records import StageStats

STAGE = "crawl"
log = logging.getLogger("refinery.crawl")


class CrawlConfig(BaseModel, frozen=True, extra="forbid"):
    """What to crawl, how politely, and the limits every request and the whole crawl obey."""

    seeds: list[str] = Field([], description="start URLs; empty means prepare does not crawl")
    user_agent: str = Field("refinery-crawler/0.1", min_length=1, description="also for robots")
    allowed_domains: list[str] = Field([], description="empty: the seeds' hosts; with subdomains")
    allow_hosts: list[str] = Field([], description="hosts, IPs or CIDRs fetched though private")
    max_pages: int = Field(1000, gt=0, description="pages written to WARC")
    max_depth: int = Field(3, ge=0, description="link hops from a seed (sitemap URLs are 1)")
    max_bytes: int = Field(1 << 30, gt=0, description="total decompressed body bytes")
    max_page_bytes: int = Field(10 << 20, gt=0, description="per response, decompressed")
    timeout_s: float = Field(30.0, gt=0, description="whole request: connect, headers and body")
    concurrency: int = Field(16, gt=0, description="requests in flight overall")
    per_host_concurrency: int = Field(1, gt=0, description="requests in flight per host")
    delay_s: float = Field(1.0, ge=0, description="least time between request starts to a host")
    max_delay_s: float = Field(30.0, ge=0, description="cap on Crawl-delay and Retry-After")
    retries: int = Field(3, ge=0, description="on 429, 5xx and connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first back-off; doubles each retry")
    max_redirects: int = Field(5, ge=0)
    sitemaps: bool = Field(True, description="read robots.txt Sitemap: lines and /sitemap.xml")
    content_types: list[str] = Field(["text/html", "application/xhtml+xml"], min_length=1)
    warc_file_bytes: int = Field(256 << 20, gt=0, description="roll to a new WARC file after")

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, seeds: list[str]) -> list[str]:
        for seed in seeds:
            check_seed(seed)
        return seeds


# Dropped: refused by policy.
BAD_SCHEME = "crawl_bad_scheme"
BAD_URL = "crawl_bad_url"
OFF_DOMAIN = "crawl_off_domain"
PRIVATE_ADDRESS = "crawl_private_address"
ROBOTS_DISALLOWED = "crawl_robots_disallowed"
MAX_DEPTH = "crawl_max_depth"
NOT_HTML = "crawl_not_html"
TOO_LARGE = "crawl_too_large"
HTTP_STATUS = "crawl_http_status"
TOO_MANY_REDIRECTS = "crawl_too_many_redirects"
REDIRECT = "crawl_redirect"  # the URL redirects to another one, which holds the page
LIMIT = "crawl_limit"
# Quarantined: the fetch failed.
TIMEOUT = "crawl_timeout"
HTTP_ERROR = "crawl_http_error"
CONNECTION_ERROR = "crawl_connection_error"
DNS = "crawl_dns"
BAD_ENCODING = "crawl_bad_encoding"
QUARANTINE_REASONS = frozenset({TIMEOUT, HTTP_ERROR, CONNECTION_ERROR, DNS, BAD_ENCODING})

QUEUED, FETCHED = "queued", "fetched"
DEFAULT_PORTS = {"http": 80, "https": 443}
_LOC = re.compile(rb"<(?:[\w.-]+:)?loc\s*>(.*?)</(?:[\w.-]+:)?loc\s*>", re.S | re.I)
_SITEMAP_INDEX = re.compile(rb"<(?:[\w.-]+:)?sitemapindex[\s>]", re.I)
_CDATA = re.compile(r"^<!\[CDATA\[(.*)\]\]>$", re.S)
_HOP_HEADERS = {"content-encoding", "transfer-encoding", "content-length"}


def kind_of(reason: str) -> str:
    """DROPPED for a policy refusal, QUARANTINED for a failed fetch."""
    return QUARANTINED if reason in QUARANTINE_REASONS else DROPPED


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")
    for seg in segments:
        if seg == "..":
            if len(out) > 1:
                out.pop()
        elif seg != ".":
            out.append(seg)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/b/.." is the directory "/a/"
    return "/".join(out) or "/"


def canonical_url(url: str, base: str | None = None) -> str:
    """`url` (resolved against `base`) with lower-case scheme and host, no default port, no
    fragment and no user info, dot segments resolved, the query kept. URLs that are not http or
    https only lose their fragment.

    Raises:
        ValueError: for an http(s) URL without a host, or with a bad port or IPv6 literal.
    """
    url = urljoin(base, url.strip()) if base else url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"no host in {url!r}")
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != DEFAULT_PORTS[scheme]:
        netloc += f":{parts.port}"
    return urlunsplit((scheme, netloc, _remove_dot_segments(parts.path), parts.query, ""))


def check_seed(url: str) -> str:
    """The canonical form of a seed. Raises ValueError if it is not an absolute URL."""
    try:
        canonical = canonical_url(url)
    except ValueError as e:
        raise ValueError(f"seed {url!r} is not a valid URL: {e}") from None
    if not urlsplit(canonical).scheme or not urlsplit(canonical).netloc:
        raise ValueError(f"seed {url!r} is not an absolute URL (scheme://host/...)")
    return canonical


def read_seeds(values: list[str]) -> list[str]:
    """Seeds from the command line: a value naming an existing file is read as one URL a line
    (blank lines and `#` comments skipped); any other value is a URL."""
    seeds: list[str] = []
    for value in values:
        if Path(value).is_file():
            lines = (line.split("#", 1)[0].strip() for line in Path(value).read_text().splitlines())
            seeds += [line for line in lines if line]
        else:
            seeds.append(value)
    return seeds


def origin_of(url: str) -> str:
    """scheme://host[:port] of a canonical URL: the scope of one robots.txt."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def _address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    kinds = [
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    ]
    return next((name for name, hit in kinds if hit), None)


def address_refusal(host: str, addresses: list[str], allow_hosts: list[str]) -> str | None:
    """Why `host` must not be fetched when it resolves to `addresses`, or None if it may.

    Every address must be public (not private, loopback, link-local, multicast, reserved or
    unspecified), unless `allow_hosts` names the host, the address, or a network holding it.
    """
    names = {entry.lower() for entry in allow_hosts}
    if host.lower() in names:
        return None
    networks = []
    for entry in allow_hosts:
        with contextlib.suppress(ValueError):  # else a host name, matched above
            networks.append(ipaddress.ip_network(entry, strict=False))
    for text in addresses:
        ip = ipaddress.ip_address(text)
        kind = _address_kind(ip)
        if kind is None or any(ip.version == n.version and ip in n for n in networks):
            continue
        bare = ip.compressed.split("%")[0]
        if bare == host.strip("[]").lower():
            return f"{host} is {kind}"
        return f"{host} resolves to {text}, which is {kind}"
    return None


def on_domain(host: str, domains: list[str]) -> bool:
    """Whether `host` is one of `domains` or a subdomain of one."""
    return any(host == d or host.endswith("." + d) for d in domains)


def policy_refusal(url: str, domains: list[str], allow_hosts: list[str]) -> tuple[str, str] | None:
    """(reason, detail) if a canonical URL is refused without any network access: its scheme,
    an IP literal that is not public, or a host outside `domains`."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        return BAD_SCHEME, f"{parts.scheme or 'no'} scheme: only http and https are crawled"
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if detail := address_refusal(host, [host], allow_hosts):
            return PRIVATE_ADDRESS, detail
    if not on_domain(host, domains):
        return OFF_DOMAIN, f"{host} is not in the allowed domains"
    return None


@dataclass(frozen=True)
class Link:
    """A URL found by the crawl: where and how deep, and the reason if it is refused at once."""

    url: str
    depth: int
    parent: str | None  # the page (or sitemap) that links it; None for a seed
    reason: str | None = None
    detail: str | None = None


def classify_links(
    hrefs: list[str], base: str | None, depth: int, domains: list[str], cfg: CrawlConfig
) -> list[Link]:
    """Canonical links of `hrefs` found at `base` (None for seeds), refused ones with reasons."""
    links = []
    for href in hrefs:
        try:
            url = canonical_url(href, base)
        except ValueError as e:
            links.append(Link(href, depth, base, BAD_URL, str(e)))
            continue
        refused = policy_refusal(url, domains, cfg.allow_hosts)
        if refused is None and depth > cfg.max_depth:
            refused = (MAX_DEPTH, f"depth {depth} is over max_depth={cfg.max_depth}")
        links.append(Link(url, depth, base, *(refused or (None, None))))
    return links


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


@dataclass(frozen=True)
class Page:
    """A 2xx response read to its end: what goes into a WARC response record."""

    url: str  # the final URL, after redirects
    chain: tuple[str, ...]  # every URL requested for it: the one asked for first, `url` last
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes  # decoded
    wire_bytes: int
    ip: str
    date: datetime


def write_response(writer: WARCWriter, page: Page) -> None:
    """Append `page` as a WARC response record whose HTTP part a reader sees as plain, decoded
    HTML: no Content-Encoding or Transfer-Encoding, Content-Length the stored body's."""
    headers = [(k, v) for k, v in page.headers if k.lower() not in _HOP_HEADERS]
    headers.append(("Content-Length", str(len(page.body))))
    http = StatusAndHeaders(f"{page.status} {page.reason}", headers, protocol="HTTP/1.1")
    warc_headers = {
        "WARC-Date": page.date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "WARC-IP-Address": page.ip.split("%")[0],
    }
    record = writer.create_warc_record(
        page.url,
        "response",
        payload=io.BytesIO(page.body),
        http_headers=http,
        warc_headers_dict=warc_headers,
    )
    writer.write_record(record)


def _sync(f: io.BufferedWriter) -> int:
    """Flush `f` to disk; return its length."""
    f.flush()
    os.fsync(f.fileno())
    return f.tell()


_TABLES = """
CREATE TABLE IF NOT EXISTS urls (
    seq INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE, depth INTEGER NOT NULL, parent TEXT,
    status TEXT NOT NULL, reason TEXT, detail TEXT,
    warc TEXT, warc_offset INTEGER, bytes INTEGER, wire_bytes INTEGER);
CREATE INDEX IF NOT EXISTS urls_by_status ON urls (status, depth, seq);
CREATE TABLE IF NOT EXISTS robots (origin TEXT PRIMARY KEY, status INTEGER, body BLOB);
CREATE TABLE IF NOT EXISTS sitemaps (origin TEXT PRIMARY KEY, docs INTEGER, urls INTEGER);
CREATE TABLE IF NOT EXISTS segments (n INTEGER PRIMARY KEY, bytes INTEGER, done INTEGER);
"""
_UPSERT = """
INSERT INTO urls (url, depth, parent, status, reason, detail, warc, warc_offset, bytes,
                  wire_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (url) DO UPDATE SET status = excluded.status, reason = excluded.reason,
    detail = excluded.detail, warc = excluded.warc, warc_offset = excluded.warc_offset,
    bytes = excluded.bytes, wire_bytes = excluded.wire_bytes
"""


class CrawlState:
    """The crawl's SQLite state and its WARC files, kept consistent across kills.

    A page's WARC record is appended to the `.part` file and fsynced, then one transaction marks
    its URL fetched (with file and offset), records the file's new committed length and adds the
    links found. On open, the `.part` file is cut back to its committed length: whatever was
    written after it belongs to no committed URL, whose fetch is simply done again.
    """

    def __init__(self, output: Path, warc_file_bytes: int) -> None:
        self.warc_dir = output / "warc"
        self.warc_dir.mkdir(parents=True, exist_ok=True)
        self.warc_file_bytes = warc_file_bytes
        self.db = sqlite3.connect(output / "state.sqlite")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(_TABLES)
        self._file: io.BufferedWriter | None = None
        self._writer: WARCWriter | None = None
        self._segment = -1

    def finish(self) -> None:
        """Rename the WARC file being written to `.warc.gz`: the run is over."""
        if self._file is not None:
            self._finish_segment()

    def close(self) -> None:
        """Close the files; an unfinished `.part` file stays for the next run to continue."""
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None
        self.db.close()

    def _paths(self, n: int) -> tuple[Path, Path]:
        final = self.warc_dir / f"crawl-{n:05d}.warc.gz"
        return final.with_name(final.name + ".part"), final

    def resume(self, max_depth: int) -> None:
        """Cut the open `.part` file back to its committed length (finishing it if full), and
        queue again the URLs refused for a depth that `max_depth` now allows."""
        row = self.db.execute("SELECT n, bytes FROM segments WHERE done = 0").fetchone()
        if row is not None:
            part, final = self._paths(row[0])
            if part.exists():
                with open(part, "r+b") as f:
                    f.truncate(row[1])
                if row[1] >= self.warc_file_bytes:
                    self._segment = row[0]
                    self._finish_segment()
            elif final.exists():  # renamed, but killed before that was recorded
                with self.db:
                    self.db.execute("UPDATE segments SET done = 1 WHERE n = ?", (row[0],))
            else:
                raise FileNotFoundError(f"{part} is missing, but the crawl state expects it")
        with self.db:
            self.db.execute(
                "UPDATE urls SET status = ?, reason = NULL, detail = NULL "
                "WHERE reason = ? AND depth <= ?",
                (QUEUED, MAX_DEPTH, max_depth),
            )

    def _open_segment(self) -> WARCWriter:
        if self._writer is not None:
            return self._writer
        row = self.db.execute("SELECT n FROM segments WHERE done = 0").fetchone()
        if row is not None:
            self._segment = row[0]
            self._file = open(self._paths(row[0])[0], "ab")  # noqa: SIM115
            self._writer = WARCWriter(self._file, gzip=True)
            return self._writer
        (last,) = self.db.execute("SELECT MAX(n) FROM segments").fetchone()
        self._segment = 0 if last is None else last + 1
        part, final = self._paths(self._segment)
        self._file = open(part, "wb")  # noqa: SIM115 (a stale .part of no segment is replaced)
        self._writer = WARCWriter(self._file, gzip=True)
        info = {"software": "refinery crawl", "format": "WARC File Format 1.0"}
        self._writer.write_record(self._writer.create_warcinfo_record(final.name, info))
        end = _sync(self._file)
        with self.db:
            self.db.execute("INSERT INTO segments VALUES (?, ?, 0)", (self._segment, end))
        return self._writer

    def _finish_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._writer = None, None
        part, final = self._paths(self._segment)
        os.replace(part, final)
        dir_fd = os.open(self.warc_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        with self.db:
            self.db.execute("UPDATE segments SET done = 1 WHERE n = ?", (self._segment,))

    def store_page(self, page: Page, depth: int, links: list[Link]) -> list[tuple[int, Link]]:
        """Write `page` to the WARC file and commit it with its links; return the links added.

        The URLs of a redirect chain are marked redirects to the last one, which is fetched.
        """
        writer = self._open_segment()
        offset = writer.out.tell()
        write_response(writer, page)
        end = _sync(writer.out)
        name = self._paths(self._segment)[1].name
        with self.db:
            self.db.execute("UPDATE segments SET bytes = ? WHERE n = ?", (end, self._segment))
            for parent, url in zip([None, *page.chain], page.chain, strict=False):
                done = (FETCHED, None, None, len(page.body), page.wire_bytes)
                moved = (DROPPED, REDIRECT, f"redirects to {page.url}", None, None)
                status, reason, detail, size, wire = done if url == page.url else moved
                row = (url, depth, parent, status, reason, detail, name, offset, size, wire)
                self.db.execute(_UPSERT, row)
            added = self._insert(links)
        if end >= self.warc_file_bytes:
            self._finish_segment()
        return added

    def _insert(self, links: list[Link]) -> list[tuple[int, Link]]:
        added = []
        for link in links:
            status = QUEUED if link.reason is None else kind_of(link.reason)
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO urls (url, depth, parent, status, reason, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (link.url, link.depth, link.parent, status, link.reason, link.detail),
            )
            if cursor.rowcount:
                added.append((cursor.lastrowid, link))
        return added

    def add_links(self, links: list[Link]) -> list[tuple[int, Link]]:
        """Record URLs not seen before; return (seq, link) of those added."""
        with self.db:
            return self._insert(links)

    def add_sitemaps(self, origin: str, docs: int, links: list[Link]) -> list[tuple[int, Link]]:
        """Record that `origin`'s sitemaps were read, with the URLs they listed."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO sitemaps VALUES (?, ?, ?)",
                            (origin, docs, len(links)))  # fmt: skip
            return self._insert(links)

    def refuse(self, url: str, reason: str, detail: str) -> str:
        """Mark `url` dropped or quarantined with `reason`; return which."""
        kind = kind_of(reason)
        with self.db:
            self.db.execute("UPDATE urls SET status = ?, reason = ?, detail = ? WHERE url = ?",
                            (kind, reason, detail, url))  # fmt: skip
        return kind

    def statuses(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT url, status FROM urls"))

    def queued(self) -> list[tuple[int, str, int, str | None]]:
        """(seq, url, depth, parent) of every queued URL, breadth first."""
        query = "SELECT seq, url, depth, parent FROM urls WHERE status = ? ORDER BY depth, seq"
        return self.db.execute(query, (QUEUED,)).fetchall()

    def seed_urls(self) -> list[str]:
        query = "SELECT url FROM urls WHERE depth = 0 AND parent IS NULL"
        return [url for (url,) in self.db.execute(query)]

    def totals(self) -> tuple[int, int]:
        """(pages fetched, their decoded body bytes)."""
        query = "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM urls WHERE status = ?"
        pages, size = self.db.execute(query, (FETCHED,)).fetchone()
        return pages, size

    def robots(self, origin: str) -> tuple[int | None, bytes] | None:
        row = self.db.execute("SELECT status, body FROM robots WHERE origin = ?", (origin,))
        return row.fetchone()

    def put_robots(self, origin: str, status: int | None, body: bytes) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO robots VALUES (?, ?, ?)", (origin, status, body)
            )

    def sitemaps_read(self, origin: str) -> bool:
        query = "SELECT 1 FROM sitemaps WHERE origin = ?"
        return self.db.execute(query, (origin,)).fetchone() is not None

    def summary(self) -> dict[str, int]:
        """Totals over every run: robots.txt files and sitemaps read, bytes of pages."""
        robots = self.db.execute("SELECT COUNT(*) FROM robots").fetchone()[0]
        docs, listed = self.db.execute(
            "SELECT COALESCE(SUM(docs), 0), COALESCE(SUM(urls), 0) FROM sitemaps"
        ).fetchone()
        wire, body = self.db.execute(
            "SELECT COALESCE(SUM(wire_bytes), 0), COALESCE(SUM(bytes), 0) FROM urls "
            "WHERE status = ?",
            (FETCHED,),
        ).fetchone()
        return {"robots_fetched": robots, "sitemaps_read": docs, "sitemap_urls": listed,
                "wire_bytes": wire, "body_bytes": body}  # fmt: skip

    def snapshot(self, limit_detail: str) -> tuple[Counter, Counter, pa.Table]:
        """(dropped, quarantined) counts by reason and the ledger: every URL not fetched; those
        still queued count as dropped by the crawl limits (and stay queued for a later run)."""
        dropped: Counter = Counter()
        quarantined: Counter = Counter()
        rows = []
        query = "SELECT url, status, reason, detail, parent FROM urls WHERE status != ?"
        for url, status, reason, detail, parent in self.db.execute(
            query + " ORDER BY seq", (FETCHED,)
        ):
            if status == QUEUED:
                status, reason, detail = DROPPED, LIMIT, limit_detail
            (dropped if status == DROPPED else quarantined)[reason] += 1
            rows.append({"doc_id": url, "stage": STAGE, "kind": status, "reason": reason,
                         "detail": detail, "source": parent or "seed", "text": None})  # fmt: skip
        return dropped, quarantined, pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


def _limit_detail(cfg: CrawlConfig, pages: int, body_bytes: int) -> str:
    if pages >= cfg.max_pages:
        return f"max_pages={cfg.max_pages} reached"
    if body_bytes >= cfg.max_bytes:
        return f"max_bytes={cfg.max_bytes} reached"
    return "left in the queue when the crawl stopped"


def run_crawl(cfg: CrawlConfig, output: Path) -> StageStats:
    """Crawl from `cfg.seeds` into `output`, continuing whatever a previous run left there.

    Args:
        cfg: The crawl config; its limits count over all runs into `output`.
        output: The crawl's directory (see the module docstring for its layout).

    Returns:
        The stage's stats over all runs: n_in is every distinct URL considered, kept the pages
        in the WARC files, and every other URL is dropped or quarantined with a reason.

    Raises:
        ValueError: for a seed that is not an absolute URL, or no seeds and no crawl to resume.
    """
    from tasks.web.crawl_fetch import crawl_async  # the network side imports this module

    start = time.perf_counter()
    seeds = [check_seed(seed) for seed in cfg.seeds]
    if not seeds and not (output / "state.sqlite").exists():
        raise ValueError(f"no seeds to crawl, and no crawl to resume at {output}")
    output.mkdir(parents=True, exist_ok=True)
    remove_temp_files(output)
    state = CrawlState(output, cfg.warc_file_bytes)
    try:
        state.resume(cfg.max_depth)
        known = state.seed_urls()
        if not seeds and not known:
            raise ValueError(f"no seeds to crawl, and no crawl to resume at {output}")
        hosts = {host_of(url) for url in [*known, *seeds]} - {""}
        domains = [d.strip(".").lower() for d in cfg.allowed_domains] or sorted(hosts)
        state.add_links(classify_links(seeds, None, 0, domains, cfg))
        requests = asyncio.run(crawl_async(cfg, state, domains))
        state.finish()
        pages, body_bytes = state.totals()
        dropped, quarantined, ledger = state.snapshot(_limit_detail(cfg, pages, body_bytes))
        summary = state.summary()
    finally:
        state.close()
    stats = StageStats(STAGE, ledger.num_rows + pages, pages, dict(dropped), dict(quarantined),
                       summary["wire_bytes"], summary["body_bytes"],
                       time.perf_counter() - start).check()  # fmt: skip
    write_table(ledger, output / "ledger.arrow")
    files = sorted(p.name for p in state.warc_dir.glob("crawl-*.warc.gz"))
    write_json({**stats.to_dict(), **summary, "requests": requests, "warc_files": files},
               output / "crawl.json")  # fmt: skip
    log.info("%s (%d WARC files at %s)", stats.summary(), len(files), state.warc_dir)
    return stats


@task(name="crawl")
def crawl(cfg: CrawlConfig, output: Path) -> dict[str, Any]:
    """Crawl `cfg.seeds` into WARC files under `output`, resuming what a killed run left
    (requests are retried inside, with back-off). Returns the stats and the WARC files."""
    stats = run_crawl(cfg, output)
    get_run_logger().info(stats.summary())
    files = sorted(str(p) for p in (output / "warc").glob("crawl-*.warc.gz"))
    return {"output": str(output), "warc_files": files, "stats": stats.to_dict()}
