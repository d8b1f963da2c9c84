"""A small web site for the crawler's tests: a real HTTP server on 127.0.0.1 that logs every
request, with the traps a crawler must handle.

Depths from `/`: /a, /b, /old (-> /new), /moved (-> /b) and the traps are 1; /a/1, /base/page
are 2; /a/1/deep is 3 and links /a/1/deep/deeper (4). /orphan (in /sitemap.xml) and
/from-index (in the sitemap index named by robots.txt) are linked from no page.
"""

import gzip
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import english

PAGE_LIMIT = 100_000  # the tests' max_page_bytes
SLOW_S = 2.0  # the slow page's delay; the tests' timeout_s is under it
STREAM_BYTES = 24 << 20  # the huge stream and the binary file: more than socket buffers hold


def page(title: str, links: list[str] = (), seed: int = 1, head: str = "") -> bytes:
    """An HTML page with two paragraphs of prose (enough for text extraction) and links."""
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    body = f"<p>{english(seed, 90)}</p><p>{english(seed + 1, 90)}</p>"
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title>{head}</head><body>"
        f"<article><h1>{title}</h1>{body}</article><ul>{anchors}</ul></body></html>"
    ).encode()


INDEX_LINKS = [
    "/a",
    "/b",
    "/old",
    "/moved",
    "/private/secret.html",
    "/slow",
    "/huge",
    "/huge-stream",
    "/bomb",
    "/flaky",
    "/always-500",
    "/retry-after",
    "/missing",
    "/drop",
    "/redirect-private",
    "/redirect-ten",
    "/r/0",
    "/gzip",
    "/deflate",
    "/br",
    "/a#again",
    "mailto:someone@example.com",
    "javascript:void(0)",
    "ftp://example.com/file.txt",
    "http://example.com/elsewhere",
]

PAGES = {
    "/": page("Index", INDEX_LINKS, 1),
    "/a": page("A", ["/a/1", "/file.bin", "../b", "/a/./1"], 3),
    "/a/1": page("A1", ["/a/1/deep"], 5),
    "/a/1/deep": page("Deep", ["/a/1/deep/deeper"], 7),
    "/a/1/deep/deeper": page("Deeper", [], 9),
    "/b": page("B", ["page", "/"], 11, head='<base href="/base/">'),
    "/base/page": page("Base page", [], 13),
    "/new": page("New", [], 15),
    "/orphan": page("Orphan", [], 17),
    "/from-index": page("From the index", [], 19),
    "/private/secret.html": page("Secret", [], 21),
}
REDIRECTS = {
    "/old": "/new",
    "/moved": "/b",
    "/redirect-private": "http://169.254.169.254/latest/meta-data/",
    "/redirect-ten": "http://10.0.0.1/",
    **{f"/r/{i}": f"/r/{i + 1}" for i in range(9)},
}
# Paths the crawl requests more than once by design (retries).
RETRIED = {"/flaky": 3, "/always-500": 4, "/retry-after": 2, "/drop": 4}


@dataclass
class Hit:
    """One request the site received."""

    path: str
    time: float  # time.monotonic() when it arrived
    host: str | None  # the Host header
    user_agent: str | None
    completed: bool = False  # the whole response was written


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        hit = Hit(self.path, time.monotonic(), self.headers["Host"], self.headers["User-Agent"])
        self.server.site.record(hit)
        try:
            self.server.site.respond(self, hit)
            hit.completed = True
        except OSError:
            self.close_connection = True  # the crawler hung up, as it should on a refusal

    def send(self, status: int, body: bytes, ctype: str = "text/html", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.end_headers()
        chunk = b"<p>" + b"x" * ((64 << 10) - 3)
        for _ in range(STREAM_BYTES // len(chunk)):
            self.wfile.write(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    site: "CrawlSite"


class CrawlSite:
    """The site, served from a daemon thread. `hits` lists every request, in order."""

    def __init__(self, crawl_delay: float = 0.2) -> None:
        self.crawl_delay = crawl_delay
        self.hits: list[Hit] = []
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.site = self
        self.port = self._server.server_address[1]
        self.bomb = gzip.compress(b"<html><body>" + b"a" * (32 << 20), 9)

    def __enter__(self) -> "CrawlSite":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, hit: Hit) -> int:
        with self._lock:
            self.hits.append(hit)
            self.counts[hit.path] = self.counts.get(hit.path, 0) + 1
            return self.counts[hit.path]

    def paths(self) -> list[str]:
        with self._lock:
            return [hit.path for hit in self.hits]

    def robots(self) -> bytes:
        return (
            "User-agent: *\nDisallow: /private/\n"
            f"Crawl-delay: {self.crawl_delay}\nSitemap: {self.url('/sitemap-index.xml')}\n"
        ).encode()

    def sitemap(self, tag: str, locs: list[str], doctype: str = "") -> bytes:
        inner = "url" if tag == "urlset" else "sitemap"
        entries = "".join(f"<{inner}><loc>{loc}</loc></{inner}>" for loc in locs)
        ns = "http://www.sitemaps.org/schemas/sitemap/0.9"
        return f'<?xml version="1.0"?>{doctype}<{tag} xmlns="{ns}">{entries}</{tag}>'.encode()

    def respond(self, h: _Handler, hit: Hit) -> None:
        path, n = hit.path, self.counts[hit.path]
        xml = "application/xml"
        if path in PAGES:
            h.send(200, PAGES[path], "text/html; charset=utf-8")
        elif path in REDIRECTS:
            target = REDIRECTS[path]
            h.send(301 if path == "/old" else 302, b"", Location=target)
        elif path == "/robots.txt":
            h.send(200, self.robots(), "text/plain")
        elif path == "/sitemap-index.xml":
            h.send(200, self.sitemap("sitemapindex", [self.url("/sitemap-pages.xml")]), xml)
        elif path == "/sitemap-pages.xml":
            h.send(200, self.sitemap("urlset", [self.url("/from-index")]), xml)
        elif path == "/sitemap.xml":
            xxe = '<!DOCTYPE urlset [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            h.send(200, self.sitemap("urlset", [self.url("/orphan"), "&xxe;"], xxe), xml)
        else:
            self.respond_trap(h, path, n)

    def respond_trap(self, h: _Handler, path: str, n: int) -> None:
        if path == "/slow":
            time.sleep(SLOW_S)
            h.send(200, page("Slow"))
        elif path == "/huge":
            h.send(200, b"<p>" + b"y" * 3 * PAGE_LIMIT)
        elif path == "/huge-stream":
            h.stream("text/html")
        elif path == "/file.bin":
            h.stream("application/octet-stream")
        elif path == "/bomb":
            h.send(200, self.bomb, Content_Encoding="gzip")
        elif path == "/gzip":
            h.send(200, gzip.compress(page("Gzip", [], 23)), Content_Encoding="gzip")
        elif path == "/deflate":
            raw = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = raw.compress(page("Deflate", [], 25)) + raw.flush()
            h.send(200, body, Content_Encoding="deflate")
        elif path == "/br":
            h.send(200, b"\x0b\x02\x80hello\x03", Content_Encoding="br")
        elif (path == "/flaky" and n <= 2) or path == "/always-500":
            h.send(500, b"try again")
        elif path == "/flaky":
            h.send(200, page("Flaky", [], 27))
        elif path == "/retry-after" and n == 1:
            h.send(429, b"slow down", Retry_After="1")
        elif path == "/retry-after":
            h.send(200, page("Retried", [], 29))
        elif path == "/drop":
            h.close_connection = True  # no response at all
        else:
            h.send(404, b"not found")
