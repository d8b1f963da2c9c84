"""The crawl's state on disk: the SQLite frontier and fetched set, the robots.txt cache, and the
WARC files the pages go to, kept consistent across kills (see `CrawlState`)."""

import io
import os
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow as pa
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from shards.schema import DROPPED, LEDGER_SCHEMA
from shards.workdir import crawl_state, crawl_warc, crawl_warc_dir
from tasks.web.crawl_policy import (
    FETCHED,
    LIMIT,
    MAX_DEPTH,
    QUEUED,
    REDIRECT,
    STAGE,
    Link,
    Page,
    kind_of,
)

_HOP_HEADERS = {"content-encoding", "transfer-encoding", "content-length"}


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
        self.output = output
        self.warc_dir = crawl_warc_dir(output)
        self.warc_dir.mkdir(parents=True, exist_ok=True)
        self.warc_file_bytes = warc_file_bytes
        self.db = sqlite3.connect(crawl_state(output))
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
        final = crawl_warc(self.output, n)
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
