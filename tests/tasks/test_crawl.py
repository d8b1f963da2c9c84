import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.ipc as ipc
import pytest
from pydantic import ValidationError
from warcio.archiveiterator import ArchiveIterator

from tasks.ingest.ingest import IngestConfig, read_partition
from tasks.ingest.inputs import discover
from tasks.web import crawl as cr
from tasks.web.crawl_fetch import CrawlError, Fetcher, Inflater, retry_after
from tests.conftest import english
from tests.tasks.crawl_site import PAGE_LIMIT, PAGES, RETRIED, CrawlSite

ROOT = Path(__file__).parents[2]
LIMIT = PAGE_LIMIT  # max_page_bytes of every test crawl
SETTINGS = {
    "allow_hosts": ["127.0.0.1"],
    "max_page_bytes": LIMIT,
    "timeout_s": 1.0,
    "delay_s": 0.01,
    "max_delay_s": 0.5,
    "retries": 3,
    "backoff_s": 0.05,
    "max_depth": 3,
    "max_redirects": 5,
}
# What a whole crawl of the site stores, and every path it requests.
STORED = {"/", "/a", "/b", "/new", "/a/1", "/a/1/deep", "/base/page", "/flaky", "/retry-after",
          "/gzip", "/deflate", "/orphan", "/from-index"}  # fmt: skip
REQUESTED = STORED | {
    "/robots.txt", "/sitemap-index.xml", "/sitemap-pages.xml", "/sitemap.xml", "/old", "/moved",
    "/slow", "/huge", "/huge-stream", "/bomb", "/always-500", "/missing", "/drop",
    "/redirect-private", "/redirect-ten", "/gzip", "/br", "/file.bin",
    *(f"/r/{i}" for i in range(6)),
}  # fmt: skip


def config(site: CrawlSite, **overrides: object) -> cr.CrawlConfig:
    return cr.CrawlConfig(**{"seeds": [site.url("/")], **SETTINGS, **overrides})


def ledger(out: Path) -> dict[str, dict]:
    rows = ipc.open_file(out / "ledger.arrow").read_all().to_pylist()
    return {row["doc_id"]: row for row in rows}


def responses(out: Path) -> list[tuple[str, object, bytes]]:
    """(target URI, HTTP headers, body) of every response record in the finished WARC files."""
    found = []
    for path in sorted((out / "warc").glob("*.warc.gz")):
        with open(path, "rb") as f:
            for i, rec in enumerate(ArchiveIterator(f)):
                assert rec.rec_type == ("warcinfo" if i == 0 else "response")
                if i:
                    uri = rec.rec_headers.get_header("WARC-Target-URI")
                    found.append((uri, rec.http_headers, rec.content_stream().read()))
    return found


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    """One whole crawl of the site: (site, output directory, stats)."""
    out = tmp_path_factory.mktemp("crawl")
    with CrawlSite(crawl_delay=0.2) as site:
        stats = cr.run_crawl(config(site), out)
        yield site, out, stats


# -- URLs, addresses, HTML ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("HTTP://Example.COM:80/a/./b/../c?q=1#frag", None, "http://example.com/a/c?q=1"),
        ("https://example.com:443", None, "https://example.com/"),
        ("https://example.com:8443/x", None, "https://example.com:8443/x"),
        ("../up?x", "http://h.org/a/b/c", "http://h.org/a/up?x"),
        ("//other.org/p", "https://h.org/", "https://other.org/p"),
        ("http://h.org/a/..", None, "http://h.org/"),
        ("http://h.org/../../x", None, "http://h.org/x"),
        ("http://user:pw@H.org/", None, "http://h.org/"),
        ("http://[::1]:8080/a", None, "http://[::1]:8080/a"),
        ("#top", "http://h.org/p", "http://h.org/p"),
        ("mailto:A@B.org#x", None, "mailto:A@B.org"),
    ],
)
def test_canonical_url(url, base, expected):
    assert cr.canonical_url(url, base) == expected


@pytest.mark.parametrize("url", ["http://h.org:99999/", "http://[::1/", "http:///path"])
def test_canonical_url_refuses_broken_urls(url):
    with pytest.raises(ValueError):
        cr.canonical_url(url)


@pytest.mark.parametrize(
    ("host", "addresses", "allow", "kind"),
    [
        ("example.com", ["93.184.216.34"], [], None),
        ("example.com", ["93.184.216.34", "10.1.2.3"], [], "private"),
        ("127.0.0.1", ["127.0.0.1"], [], "loopback"),
        ("169.254.169.254", ["169.254.169.254"], [], "link-local"),
        ("x.org", ["0.0.0.0"], [], "unspecified"),
        ("x.org", ["224.0.0.1"], [], "multicast"),
        ("x.org", ["240.0.0.1"], [], "reserved"),
        ("x.org", ["100.64.0.1"], [], "not globally routable"),
        ("x.org", ["2606:4700::1111"], [], None),
        ("x.org", ["::1"], [], "loopback"),
        ("x.org", ["fe80::1%eth0"], [], "link-local"),
        ("x.org", ["fd00::1"], [], "private"),
        ("x.org", ["::ffff:127.0.0.1"], [], "loopback"),
        ("x.org", ["::"], [], "unspecified"),
        ("x.org", ["ff02::1"], [], "multicast"),
        ("127.0.0.1", ["127.0.0.1"], ["127.0.0.1"], None),
        ("x.org", ["10.9.8.7"], ["10.0.0.0/8"], None),
        ("x.org", ["10.9.8.7", "192.168.1.1"], ["10.0.0.0/8"], "private"),
        ("x.org", ["fd12::5"], ["fd12::/16"], None),
        ("x.org", ["fd13::5"], ["fd12::/16"], "private"),
        ("Intranet.local", ["10.0.0.5"], ["intranet.local"], None),
        ("x.org", ["::1"], ["127.0.0.0/8"], "loopback"),
    ],
)
def test_address_refusal(host, addresses, allow, kind):
    detail = cr.address_refusal(host, addresses, allow)
    assert (detail is None) == (kind is None)
    if kind is not None:
        assert detail.endswith(f"is {kind}")


def test_address_refusal_names_the_address():
    assert cr.address_refusal("10.0.0.1", ["10.0.0.1"], []) == "10.0.0.1 is private"
    detail = cr.address_refusal("db.corp", ["8.8.8.8", "10.0.0.1"], [])
    assert detail == "db.corp resolves to 10.0.0.1, which is private"


def test_policy_refusal_and_domains():
    domains = ["example.com"]
    assert cr.policy_refusal("https://www.example.com/x", domains, []) is None
    assert cr.policy_refusal("http://badexample.com/", domains, [])[0] == cr.OFF_DOMAIN
    assert cr.policy_refusal("ftp://example.com/", domains, [])[0] == cr.BAD_SCHEME
    assert cr.policy_refusal("javascript:void(0)", domains, [])[0] == cr.BAD_SCHEME
    refused = cr.policy_refusal("http://169.254.169.254/latest/", domains, [])
    assert refused == (cr.PRIVATE_ADDRESS, "169.254.169.254 is link-local")


def test_extract_links_uses_base_href():
    html = (b'<html><head><base href="/docs/"><link rel="next" href="p2"></head><body>'
            b'<a href="a.html">a</a><a href="/b">b</a><a href="a.html">again</a>'
            b'<a href="mailto:x@y.z">m</a><a>no href</a></body></html>')  # fmt: skip
    links = cr.extract_links(html, "http://h.org/index.html")
    assert links == ["http://h.org/docs/p2", "http://h.org/docs/a.html", "http://h.org/b",
                     "mailto:x@y.z"]  # fmt: skip
    assert cr.extract_links(b"", "http://h.org/") == []


def test_parse_sitemap_does_not_resolve_entities():
    body = (
        b'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<urlset><url><loc> http://h.org/a?x=1&amp;y=2 </loc></url><url><loc>&e;</loc></url>"
        b"<url><loc><![CDATA[http://h.org/c]]></loc></url></urlset>"
    )
    assert cr.parse_sitemap(body) == (False, ["http://h.org/a?x=1&y=2", "&e;", "http://h.org/c"])
    index = b"<sm:sitemapindex xmlns:sm='x'><sm:sitemap><sm:loc>http://h.org/s.xml</sm:loc>"
    assert cr.parse_sitemap(index) == (True, ["http://h.org/s.xml"])


def test_retry_after():
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after("Mon, 01 Jan 2024 00:00:30 GMT", now) == 30.0
    assert retry_after("Sun, 31 Dec 2023 00:00:00 GMT", now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_inflater_caps_a_gzip_bomb_chunk_by_chunk():
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b"\0" * (64 << 20)) + bomb.flush()
    inflater = Inflater("gzip", 1000)
    assert not inflater.feed(data)  # one 64 KiB chunk, 64 MiB inside: stops at 1001 bytes
    assert len(inflater.body) == 1001


def test_inflater_raw_deflate_and_refused_codings():
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = raw.compress(b"hello " * 100) + raw.flush()
    inflater = Inflater("deflate", 10_000)
    for i in range(0, len(data), 7):
        assert inflater.feed(data[i : i + 7])
    assert inflater.finish() == b"hello " * 100
    with pytest.raises(CrawlError) as e:
        Inflater("br", 10)
    assert e.value.reason == cr.BAD_ENCODING
    cut = Inflater("gzip", 10_000)
    cut.feed(zlib.compress(b"x" * 1000)[:-6])
    with pytest.raises(CrawlError, match="ends before"):
        cut.finish()


def test_config_checks_seeds_and_values(tmp_path):
    with pytest.raises(ValidationError, match="not an absolute URL"):
        cr.CrawlConfig(seeds=["example.com/page"])
    with pytest.raises(ValidationError):
        cr.CrawlConfig(max_pages=0)
    with pytest.raises(ValidationError):
        cr.CrawlConfig(max_page_byte=1)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# start here\nhttp://a.org/\n\n  https://b.org/x  # and here\n")
    assert cr.read_seeds([str(seeds), "http://c.org/"]) == [
        "http://a.org/", "https://b.org/x", "http://c.org/"]  # fmt: skip


def test_no_seeds_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no seeds"):
        cr.run_crawl(cr.CrawlConfig(), tmp_path / "out")


# -- the network side, alone ----------------------------------------------------------------


def run_fetch(cfg: cr.CrawlConfig, url: str, domains: list[str], **kwargs) -> cr.Page:
    async def go() -> cr.Page:
        async with Fetcher(cfg, domains, kwargs.pop("verify", None)) as fetcher:
            return await fetcher.fetch(url, limit=cfg.max_page_bytes, **kwargs)

    return asyncio.run(go())


def test_fetch_connects_to_the_checked_address(monkeypatch):
    """A host that resolves only once (DNS rebinding) is fetched at the address checked."""
    with CrawlSite() as site:
        answers = [["127.0.0.1"], ["10.0.0.1"]]

        async def resolve(self, host, port):
            return answers.pop(0)

        monkeypatch.setattr(Fetcher, "_resolve", resolve)
        cfg = cr.CrawlConfig(**SETTINGS)
        page = run_fetch(cfg, f"http://rebind.test:{site.port}/a", ["rebind.test"])
        assert page.ip == "127.0.0.1" and b"<title>A</title>" in page.body
        assert [(h.path, h.host) for h in site.hits] == [("/a", f"rebind.test:{site.port}")]
        assert answers == [["10.0.0.1"]]  # resolved once, for the check


def test_fetch_dns_failure():
    cfg = cr.CrawlConfig(**{**SETTINGS, "timeout_s": 3.0})
    with pytest.raises(CrawlError) as e:
        run_fetch(cfg, "http://no-such-host.invalid/", ["no-such-host.invalid"])
    assert e.value.reason == cr.DNS and "no-such-host.invalid" in e.value.detail


def _tls_server(tmp_path: Path, names: list[str]) -> tuple[ThreadingHTTPServer, ssl.SSLContext]:
    """An https server on 127.0.0.1 with a self-signed certificate for `names`, and a client
    context that trusts it. The server notes the SNI name it was asked for."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = f"<html><title>tls</title>{self.headers['Host']}</html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    server.sni = sni
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    return server, client_ctx


@pytest.mark.parametrize("cert_names", [["localhost"], ["other.test"]])
def test_https_is_pinned_and_verifies_the_host_name(tmp_path, cert_names):
    server, client_ctx = _tls_server(tmp_path, cert_names)
    port = server.server_address[1]
    cfg = cr.CrawlConfig(**{**SETTINGS, "allow_hosts": ["127.0.0.1"], "retries": 0})
    url = f"https://localhost:{port}/"
    try:
        if cert_names == ["localhost"]:
            page = run_fetch(cfg, url, ["localhost"], verify=client_ctx)
            assert page.ip == "127.0.0.1"
            assert f"localhost:{port}".encode() in page.body  # the Host header
            assert server.sni == ["localhost"]  # TLS was for the host name, not the IP
        else:
            with pytest.raises(CrawlError) as e:
                run_fetch(cfg, url, ["localhost"], verify=client_ctx)
            assert e.value.reason == cr.CONNECTION_ERROR and "certificate" in e.value.detail.lower()
    finally:
        server.shutdown()
        server.server_close()


# -- a whole crawl of the test site ---------------------------------------------------------


def test_requests_made(crawled):
    site, _, _ = crawled
    paths = site.paths()
    assert set(paths) == REQUESTED
    for path in set(paths):
        assert paths.count(path) == RETRIED.get(path, 1), path
    assert not any(p.startswith("/private/") or p == "/a/1/deep/deeper" for p in paths)
    assert paths[0] == "/robots.txt"
    assert {h.user_agent for h in site.hits} == {"refinery-crawler/0.1"}
    assert {h.host for h in site.hits} == {f"127.0.0.1:{site.port}"}


def test_refusals_are_read_from_headers(crawled):
    site, _, _ = crawled
    done = {h.path: h.completed for h in site.hits}
    assert not done["/huge-stream"] and not done["/file.bin"]  # hung up on, not read through


def test_every_refused_url_is_in_the_ledger(crawled):
    site, out, _ = crawled
    rows = ledger(out)
    u = site.url
    scheme = "scheme: only http and https are crawled"
    expected = {
        u("/private/secret.html"): (
            cr.ROBOTS_DISALLOWED,
            "robots.txt disallows /private/secret.html for refinery-crawler/0.1",
        ),
        u("/slow"): (cr.TIMEOUT, "no complete response within 1 s"),
        u("/huge"): (cr.TOO_LARGE, f"Content-Length {3 * LIMIT + 3} is over {LIMIT} bytes"),
        u("/huge-stream"): (cr.TOO_LARGE, f"body passed {LIMIT} bytes"),
        u("/bomb"): (cr.TOO_LARGE, f"body (gzip-decoded) passed {LIMIT} bytes"),
        u("/file.bin"): (cr.NOT_HTML, "Content-Type application/octet-stream"),
        u("/always-500"): (cr.HTTP_ERROR, "HTTP 500 after 4 attempts"),
        u("/missing"): (cr.HTTP_STATUS, "HTTP 404"),
        u("/br"): (cr.BAD_ENCODING, "Content-Encoding 'br' was not asked for"),
        u("/redirect-private"): (
            cr.PRIVATE_ADDRESS,
            "redirect to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is link-local",
        ),
        u("/redirect-ten"): (
            cr.PRIVATE_ADDRESS,
            "redirect to http://10.0.0.1/: 10.0.0.1 is private",
        ),
        u("/r/0"): (cr.TOO_MANY_REDIRECTS, f"more than 5 redirects from {u('/r/0')}"),
        u("/old"): (cr.REDIRECT, f"redirects to {u('/new')}"),
        u("/moved"): (cr.REDIRECT, f"redirects to {u('/b')}, which is crawled on its own"),
        u("/a/1/deep/deeper"): (cr.MAX_DEPTH, "depth 4 is over max_depth=3"),
        "mailto:someone@example.com": (cr.BAD_SCHEME, f"mailto {scheme}"),
        "javascript:void(0)": (cr.BAD_SCHEME, f"javascript {scheme}"),
        "ftp://example.com/file.txt": (cr.BAD_SCHEME, f"ftp {scheme}"),
        "http://example.com/elsewhere": (
            cr.OFF_DOMAIN,
            "example.com is not in the allowed domains",
        ),
        "&xxe;": (cr.BAD_SCHEME, f"no {scheme}"),
    }
    assert {
        url: (r["reason"], r["detail"]) for url, r in rows.items() if url != u("/drop")
    } == expected
    drop = rows[u("/drop")]
    assert drop["reason"] == cr.CONNECTION_ERROR and "after 4 attempts" in drop["detail"]
    assert {r["kind"] for r in rows.values() if r["reason"] in cr.QUARANTINE_REASONS} == {
        "quarantined"
    }
    assert {r["kind"] for r in rows.values() if r["reason"] not in cr.QUARANTINE_REASONS} == {
        "dropped"
    }
    assert rows[u("/a/1/deep/deeper")]["source"] == u("/a/1/deep")
    assert rows["&xxe;"]["source"] == u("/sitemap.xml")
    assert {r["stage"] for r in rows.values()} == {"crawl"}


def test_stats_balance(crawled):
    _, out, stats = crawled
    stats.check()
    assert stats.kept == len(STORED)
    assert stats.n_in == stats.kept + len(ledger(out))
    assert stats.quarantined == {cr.TIMEOUT: 1, cr.HTTP_ERROR: 1, cr.BAD_ENCODING: 1,
                                 cr.CONNECTION_ERROR: 1}  # fmt: skip
    summary = json.loads((out / "crawl.json").read_text())
    assert summary["kept"] == stats.kept and summary["warc_files"] == ["crawl-00000.warc.gz"]
    assert summary["robots_fetched"] == 1 and summary["sitemaps_read"] == 3


def test_crawl_delay_between_request_starts(crawled):
    site, _, _ = crawled
    times = [h.time for h in site.hits]
    # Crawl-delay: 0.2, far above delay_s. The site runs on a thread of this process, so it
    # can note a request's arrival late while the crawler holds the interpreter: one late
    # arrival shortens the gap after it, not the span of the two gaps around it.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    spans = [b - a for a, b in zip(times, times[2:], strict=False)]
    assert min(gaps) > 0.05 and min(spans) > 2 * 0.2 - 0.05
    assert sorted(gaps)[len(gaps) // 2] > 0.2 - 0.02
    retried = [h.time for h in site.hits if h.path == "/retry-after"]
    assert 0.5 - 0.05 < retried[1] - retried[0] < 1.0  # Retry-After: 1, capped at max_delay_s


def test_warc_files_hold_the_pages(crawled):
    _, out, _ = crawled
    assert not list((out / "warc").glob("*.part"))
    found = responses(out)
    assert sorted(path_of(uri) for uri, _, _ in found) == sorted(STORED)
    for uri, http, body in found:
        assert http.get_header("Content-Encoding") is None
        assert int(http.get_header("Content-Length")) == len(body)
        assert http.get_statuscode() == "200"
        path = path_of(uri)
        assert body == PAGES.get(path, body) and body.startswith(b"<!DOCTYPE html>")


def test_warc_files_are_ingest_inputs(crawled):
    _, out, _ = crawled
    files, ignored = discover([str(out / "warc")])
    assert [Path(f.uri).name for f in files] == ["crawl-00000.warc.gz"] and not ignored
    result = read_partition(tuple(files), IngestConfig())
    assert result.removed.height == 0
    kept = {path_of(row["url"]): row for row in result.kept.iter_rows(named=True)}
    assert set(kept) == STORED
    assert english(23, 90)[:60] in kept["/gzip"]["text"]
    assert kept["/new"]["title"] == "New"


def test_a_finished_crawl_fetches_nothing_again(crawled):
    site, out, stats = crawled
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "warc").iterdir()}
    n = len(site.hits)
    again = cr.run_crawl(config(site), out)
    assert len(site.hits) == n
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "warc").iterdir()} == before
    assert (again.n_in, again.kept, again.dropped, again.quarantined) == (
        stats.n_in, stats.kept, stats.dropped, stats.quarantined)  # fmt: skip


def test_private_and_ftp_seeds_are_refused(tmp_path):
    with CrawlSite() as site:
        cfg = config(site, allow_hosts=[], seeds=[site.url("/"), "ftp://127.0.0.1/pub/"])
        stats = cr.run_crawl(cfg, tmp_path)
        assert site.hits == []
    rows = ledger(tmp_path)
    assert rows[site.url("/")]["reason"] == cr.PRIVATE_ADDRESS
    assert rows[site.url("/")]["detail"] == "127.0.0.1 is loopback"
    assert rows[site.url("/")]["source"] == "seed"
    assert rows["ftp://127.0.0.1/pub/"]["reason"] == cr.BAD_SCHEME
    assert (stats.n_in, stats.kept) == (2, 0)
    assert not list((tmp_path / "warc").iterdir())


def test_limits_leave_urls_queued_for_the_next_run(tmp_path):
    with CrawlSite(crawl_delay=0.05) as site:
        first = cr.run_crawl(config(site, max_pages=3, sitemaps=False), tmp_path)
        assert first.kept == 3 and first.dropped[cr.LIMIT] > 0
        limited = [r for r in ledger(tmp_path).values() if r["reason"] == cr.LIMIT]
        assert {r["detail"] for r in limited} == {"max_pages=3 reached"}
        second = cr.run_crawl(config(site, max_pages=6, sitemaps=False), tmp_path)
        assert second.kept == 6 and second.n_in > first.n_in
        paths = [p for p in site.paths() if p not in RETRIED]
        assert len(paths) == len(set(paths))
    assert sorted(p.name for p in (tmp_path / "warc").iterdir()) == [
        "crawl-00000.warc.gz", "crawl-00001.warc.gz"]  # fmt: skip
    assert len({uri for uri, _, _ in responses(tmp_path)}) == len(responses(tmp_path)) == 6


def test_small_warc_files_roll_over(tmp_path):
    with CrawlSite(crawl_delay=0.01) as site:
        cfg = config(site, max_pages=4, sitemaps=False, warc_file_bytes=1)
        assert cr.run_crawl(cfg, tmp_path).kept == 4
    names = sorted(p.name for p in (tmp_path / "warc").iterdir())
    assert names == [f"crawl-{i:05d}.warc.gz" for i in range(4)]
    assert len(responses(tmp_path)) == 4


# -- the command line, killed and resumed ---------------------------------------------------


def cli(site: CrawlSite, out: Path) -> list[str]:
    sets = [f"crawl.{k}={v}" for k, v in SETTINGS.items() if k != "allow_hosts"]
    sets.append("crawl.allow_hosts=[127.0.0.1]")
    args = [sys.executable, "-m", "flows.cli", "crawl", "--seeds", site.url("/"), "-o", str(out)]
    return args + [a for s in sets for a in ("--set", s)]


def committed(state: Path, url: str) -> bool:
    if not state.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT status FROM urls WHERE url = ?", (url,)).fetchone()
    except sqlite3.OperationalError:
        return False
    return row is not None and row[0] != "queued"


def reasons_by_path(out: Path) -> set[tuple[str, str]]:
    return {(path_of(url), r["reason"]) for url, r in ledger(out).items() if "127.0.0.1" in url}


@pytest.mark.slow
def test_killed_crawl_resumes_without_fetching_twice(tmp_path, crawled):
    _, reference, _ = crawled
    out = tmp_path / "out"
    sitemaps = {"/sitemap-index.xml", "/sitemap-pages.xml", "/sitemap.xml"}
    with CrawlSite(crawl_delay=0.1) as site:
        proc = subprocess.Popen(cli(site, out), cwd=ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                hits = list(site.hits)
                last = hits[-1] if hits else None
                if (len(hits) >= 8 and sitemaps <= {h.path for h in hits}
                        and last.path in PAGES and last.completed
                        and committed(out / "state.sqlite", site.url(last.path))):  # fmt: skip
                    break
                time.sleep(0.005)
            os.killpg(proc.pid, signal.SIGKILL)  # between two requests: the last one committed
        finally:
            proc.wait()
        killed_at = len(site.hits)
        assert proc.returncode == -signal.SIGKILL and killed_at < 20
        assert list((out / "warc").glob("*.part"))  # the unfinished WARC file
        done = subprocess.run(cli(site, out), cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"refinery: {len(STORED)} pages in 1 WARC files at {out} (")
        paths = site.paths()
        assert set(paths) == REQUESTED
        for path in set(paths):
            assert paths.count(path) == RETRIED.get(path, 1), path
        n = len(site.hits)
        cr.run_crawl(config(site), out)  # finished: fetches nothing
        assert len(site.hits) == n
    stored = [path_of(uri) for uri, _, _ in responses(out)]
    assert sorted(stored) == sorted(path_of(uri) for uri, _, _ in responses(reference))
    assert reasons_by_path(out) == reasons_by_path(reference)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from flows.cli import main

    assert main(["crawl", "--seeds", "not a url", "-o", str(tmp_path / "a")]) == 2
    assert main(["crawl", "-o", str(tmp_path / "b")]) == 2
    assert main(["crawl", "--seeds", "http://a.org/", "-o", str(tmp_path),
                 "--set", "crawl.max_pagez=3"]) == 2  # fmt: skip
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "refinery: error: seed 'not a url' is not an absolute URL (scheme://host/...)",
        f"refinery: error: no seeds to crawl, and no crawl to resume at {tmp_path / 'b'}",
        "refinery: error: unknown config key: crawl.max_pagez",
    ]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
