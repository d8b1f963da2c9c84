"""The network side of the crawl: safe fetches, politeness, and the breadth-first loop.

Every request and every redirect hop is checked (scheme, allowed domain, the addresses the host
resolves to, robots.txt) and then sent to the very address that was checked, with the Host
header and, for https, the SNI name of the real host, so a DNS answer that changes after the
check (rebinding) cannot redirect the request and TLS still verifies the real host name. Each
host gets its own connection pool, so a connection is never shared between host names.

Bodies are read raw and decoded here with zlib under `max_page_bytes`, so a gzip bomb costs at
most that much memory. `Crawler` runs the loop over `tasks.web.crawl.CrawlState`.
"""

import asyncio
import contextlib
import email.utils
import heapq
import logging
import socket
import ssl
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
from protego import Protego

from tasks.web.crawl import (
    BAD_ENCODING,
    BAD_URL,
    CONNECTION_ERROR,
    DNS,
    FETCHED,
    HTTP_ERROR,
    HTTP_STATUS,
    NOT_HTML,
    PRIVATE_ADDRESS,
    QUEUED,
    REDIRECT,
    ROBOTS_DISALLOWED,
    TIMEOUT,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    CrawlConfig,
    CrawlState,
    Link,
    Page,
    address_refusal,
    canonical_url,
    classify_links,
    extract_links,
    host_of,
    kind_of,
    origin_of,
    parse_sitemap,
    policy_refusal,
)

log = logging.getLogger("refinery.crawl")

ROBOTS_BYTES = 512 << 10  # RFC 9309: parse at least the first 500 KiB
MAX_SITEMAPS = 50  # sitemaps followed from one sitemap index
PROGRESS_EVERY = 100  # pages between progress lines
_REDIRECTS = {301, 302, 303, 307, 308}
_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"

RobotsCheck = Callable[[str], Awaitable[str | None]]
Claim = Callable[[str], None]


class CrawlError(Exception):
    """A URL refused or failed, with its reason (`tasks.web.crawl`) and a readable detail."""

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.status = reason, detail, status


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date), or None."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def media_type(content_type: str | None) -> str:
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


@dataclass
class _Host:
    sem: asyncio.Semaphore
    delay: float
    last_start: float = float("-inf")
    hold_until: float = float("-inf")


class HostSlots:
    """Per-host politeness: at most `concurrency` requests in flight, and request starts at
    least `delay` apart (raised by Crawl-delay, pushed back by back-off and Retry-After)."""

    def __init__(self, concurrency: int, delay: float) -> None:
        self.concurrency, self.delay = concurrency, delay
        self._hosts: dict[str, _Host] = {}

    def _get(self, host: str) -> _Host:
        if host not in self._hosts:
            self._hosts[host] = _Host(asyncio.Semaphore(self.concurrency), self.delay)
        return self._hosts[host]

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        h = self._get(host)
        async with h.sem:
            loop = asyncio.get_running_loop()
            start = max(loop.time(), h.last_start + h.delay, h.hold_until)
            h.last_start = start  # reserved before sleeping, so concurrent slots space out
            await asyncio.sleep(start - loop.time())
            yield

    def slow_down(self, host: str, delay: float) -> None:
        h = self._get(host)
        h.delay = max(h.delay, delay)

    def hold(self, host: str, seconds: float) -> None:
        h = self._get(host)
        h.hold_until = max(h.hold_until, asyncio.get_running_loop().time() + seconds)


@dataclass(frozen=True)
class _Reply:
    """One response: a redirect, a status to retry, or a page."""

    status: int
    location: str | None = None
    retry_after: float | None = None
    page: Page | None = None


class Fetcher:
    """GET requests that check every hop, pin the checked address, retry, and cap the body.

    Use as an async context manager (it closes its connection pools).
    """

    def __init__(
        self, cfg: CrawlConfig, domains: list[str], verify: ssl.SSLContext | None = None
    ) -> None:
        self.cfg, self.domains = cfg, domains
        self.hosts = HostSlots(cfg.per_host_concurrency, cfg.delay_s)
        self.requests = 0
        self._ssl = verify or httpx.create_ssl_context()
        self._clients: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> "Fetcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients.values():
            await client.aclose()

    def _client(self, host: str) -> httpx.AsyncClient:
        if host not in self._clients:
            self._clients[host] = httpx.AsyncClient(
                verify=self._ssl,
                trust_env=False,  # a proxy from the environment would bypass the address pin
                follow_redirects=False,
                timeout=self.cfg.timeout_s,
                limits=httpx.Limits(max_keepalive_connections=self.cfg.per_host_concurrency),
                headers={
                    "User-Agent": self.cfg.user_agent,
                    "Accept": _ACCEPT,
                    "Accept-Encoding": "gzip, deflate",
                },
            )
        return self._clients[host]

    async def fetch(
        self,
        url: str,
        *,
        limit: int,
        robots: RobotsCheck | None = None,
        claim: Claim | None = None,
        content_types: list[str] | None = None,
        truncate: bool = False,
    ) -> Page:
        """GET a canonical URL, following redirects by hand and checking every hop.

        Args:
            url: The URL asked for.
            limit: Decoded body bytes kept at most.
            robots: Says why robots.txt refuses a URL (None: robots.txt is not consulted).
            claim: Called with each redirect target before it is requested; raises
                `CrawlError` to stop there.
            content_types: Media types accepted (None: any).
            truncate: Keep the first `limit` bytes of a longer body instead of refusing it.

        Raises:
            CrawlError: for a refused or failed URL; a hop's reason is the URL's, with
                "redirect to <hop>: " before its detail.
        """
        chain = [url]
        while True:
            current = chain[-1]
            try:
                ips = await self._check(current, robots)
                reply = await self._retrying(current, ips, limit, content_types, truncate)
            except CrawlError as e:
                if current == url:
                    raise
                raise CrawlError(e.reason, f"redirect to {current}: {e.detail}", e.status) from None
            if reply.page is not None:
                return replace(reply.page, chain=tuple(chain))
            if len(chain) > self.cfg.max_redirects:
                detail = f"more than {self.cfg.max_redirects} redirects from {url}"
                raise CrawlError(TOO_MANY_REDIRECTS, detail)
            try:
                target = canonical_url(reply.location or "", current)
            except ValueError as e:
                raise CrawlError(BAD_URL, f"redirect to {reply.location!r}: {e}") from None
            if target in chain:
                raise CrawlError(TOO_MANY_REDIRECTS, f"redirect loop at {target}")
            if claim is not None:
                claim(target)
            chain.append(target)

    async def _check(self, url: str, robots: RobotsCheck | None) -> list[str]:
        """The addresses to connect to for `url`, once every safety check has passed."""
        if refused := policy_refusal(url, self.domains, self.cfg.allow_hosts):
            raise CrawlError(*refused)
        parts = urlsplit(url)
        host = parts.hostname or ""
        ips = await self._resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
        if detail := address_refusal(host, ips, self.cfg.allow_hosts):
            raise CrawlError(PRIVATE_ADDRESS, detail)
        if robots is not None and (detail := await robots(url)):
            raise CrawlError(ROBOTS_DISALLOWED, detail)
        return ips

    async def _resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, TimeoutError) as e:
            raise CrawlError(
                DNS, f"{host} does not resolve: {str(e) or type(e).__name__}"
            ) from None
        ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not ips:
            raise CrawlError(DNS, f"{host} has no address")
        return ips

    async def _retrying(
        self, url: str, ips: list[str], limit: int, types: list[str] | None, truncate: bool
    ) -> _Reply:
        """One hop, retried with exponential back-off on 429, 5xx and connection errors."""
        host = host_of(url)
        for attempt in range(1, self.cfg.retries + 2):
            backoff = self.cfg.backoff_s * 2 ** (attempt - 1)
            try:
                reply = await self._attempt(url, ips, limit, types, truncate)
            except (TimeoutError, httpx.TimeoutException):
                detail = f"no complete response within {self.cfg.timeout_s:g} s"
                raise CrawlError(TIMEOUT, detail) from None
            except httpx.InvalidURL as e:
                raise CrawlError(BAD_URL, f"{url}: {e}") from None
            except httpx.TransportError as e:
                if attempt > self.cfg.retries:
                    detail = f"{type(e).__name__}: {e} (after {attempt} attempts)"
                    raise CrawlError(CONNECTION_ERROR, detail) from None
                self.hosts.hold(host, backoff)
                continue
            if reply.status != 429 and reply.status < 500:
                return reply
            if attempt > self.cfg.retries:
                detail = f"HTTP {reply.status} after {attempt} attempts"
                raise CrawlError(HTTP_ERROR, detail, reply.status)
            asked = min(reply.retry_after or 0.0, self.cfg.max_delay_s)
            self.hosts.hold(host, max(backoff, asked))
        raise AssertionError("unreachable")

    async def _attempt(
        self, url: str, ips: list[str], limit: int, types: list[str] | None, truncate: bool
    ) -> _Reply:
        """One request in the host's slot, under one timeout for connect, headers and body;
        the checked addresses are tried in order until one connects."""
        target = httpx.URL(url)
        host = target.raw_host.decode("ascii")
        async with self.hosts.slot(host_of(url)), asyncio.timeout(self.cfg.timeout_s):
            for i, ip in enumerate(ips):
                self.requests += 1
                try:
                    return await self._send(url, target, host, ip, limit, types, truncate)
                except httpx.ConnectError:
                    if i == len(ips) - 1:
                        raise
        raise AssertionError("unreachable")

    async def _send(
        self,
        url: str,
        target: httpx.URL,
        host: str,
        ip: str,
        limit: int,
        types: list[str] | None,
        truncate: bool,
    ) -> _Reply:
        date = datetime.now(UTC)
        headers = {"Host": target.netloc.decode("ascii")}
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        pinned = target.copy_with(host=ip)
        client = self._client(host)
        async with client.stream("GET", pinned, headers=headers, extensions=extensions) as r:
            status = r.status_code
            if status in _REDIRECTS and "location" in r.headers:
                return _Reply(status, location=r.headers["location"])
            if status == 429 or status >= 500:
                wait = retry_after(r.headers.get("retry-after"), datetime.now(UTC))
                return _Reply(status, retry_after=wait)
            if not 200 <= status < 300:
                raise CrawlError(HTTP_STATUS, f"HTTP {status}", status)
            body, wire = await self._read_body(r, limit, types, truncate)
            raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in r.headers.raw]
            page = Page(url, (url,), status, r.reason_phrase, raw_headers, body, wire, ip, date)
            return _Reply(status, page=page)

    async def _read_body(
        self, r: httpx.Response, limit: int, types: list[str] | None, truncate: bool
    ) -> tuple[bytes, int]:
        """The decoded body and its bytes on the wire; refused from the headers alone when it
        is not a wanted type or too long, and as soon as the decoded body passes `limit`."""
        kind = media_type(r.headers.get("content-type"))
        if types is not None and kind not in types:
            raise CrawlError(NOT_HTML, f"Content-Type {kind or '(none)'}")
        length = r.headers.get("content-length", "")
        if not truncate and length.isdigit() and int(length) > limit:
            raise CrawlError(TOO_LARGE, f"Content-Length {length} is over {limit} bytes")
        inflater = Inflater(r.headers.get("content-encoding", ""), limit)
        wire = 0
        async for chunk in r.aiter_raw():
            wire += len(chunk)
            if not inflater.feed(chunk):
                if truncate:
                    return inflater.finish(complete=False), wire
                coded = f" ({inflater.coding}-decoded)" if inflater.coding else ""
                raise CrawlError(TOO_LARGE, f"body{coded} passed {limit} bytes")
        return inflater.finish(), wire


@dataclass(frozen=True)
class Robots:
    """One origin's robots.txt, or why it could not be read (which disallows everything)."""

    parser: Protego | None
    unavailable: str | None = None

    def refusal(self, url: str, agent: str) -> str | None:
        if self.parser is None:
            return f"robots.txt unavailable, so nothing may be crawled ({self.unavailable})"
        if self.parser.can_fetch(url, agent):
            return None
        return f"robots.txt disallows {urlsplit(url).path} for {agent}"


class Queued(NamedTuple):
    depth: int
    seq: int
    url: str
    parent: str | None


class Crawler:
    """The breadth-first loop: takes queued URLs host by host within the limits, fetches them,
    and records each outcome in the state before the next run could need it."""

    def __init__(
        self, cfg: CrawlConfig, state: CrawlState, domains: list[str], fetcher: Fetcher
    ) -> None:
        self.cfg, self.state, self.domains, self.fetcher = cfg, state, domains, fetcher
        self.status = state.statuses()
        self.queues: dict[str, list[Queued]] = {}
        for seq, url, depth, parent in state.queued():
            self._push(Queued(depth, seq, url, parent))
        self.active: set[str] = set()  # being fetched, or claimed by a redirect in flight
        self.busy: Counter[str] = Counter()
        self.pages, self.body_bytes = state.totals()
        self.robots: dict[str, Robots] = {}
        self._robots_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.outcomes: Counter[str] = Counter()

    def _push(self, item: Queued) -> None:
        heapq.heappush(self.queues.setdefault(host_of(item.url), []), item)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.tasks.add(asyncio.create_task(coro))

    async def run(self) -> None:
        """Crawl until the queue is empty or a limit is reached; errors in the code propagate."""
        while True:
            self._start_pages()
            if not self.tasks:
                return
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                self.tasks.discard(task)
                task.result()

    def _within_limits(self) -> bool:
        return (
            self.pages + self.in_flight < self.cfg.max_pages
            and self.body_bytes < self.cfg.max_bytes
        )

    def _start_pages(self) -> None:
        while self.in_flight < self.cfg.concurrency and self._within_limits():
            item = self._pop()
            if item is None:
                return
            self.in_flight += 1
            self._spawn(self._crawl(item))

    def _pop(self) -> Queued | None:
        """The shallowest, oldest queued URL of a host with a free slot."""
        best: list[Queued] | None = None
        for host, heap in list(self.queues.items()):
            while heap and self.status.get(heap[0].url) != QUEUED:
                heapq.heappop(heap)  # fetched through a redirect meanwhile
            if not heap:
                del self.queues[host]
            elif heap[0].url in self.active or self.busy[host] >= self.cfg.per_host_concurrency:
                continue  # claimed by a redirect in flight: it may still need fetching after
            elif best is None or heap[0] < best[0]:
                best = heap
        if best is None:
            return None
        item = heapq.heappop(best)
        self.busy[host_of(item.url)] += 1
        self.active.add(item.url)
        return item

    async def _crawl(self, item: Queued) -> None:
        claimed = [item.url]
        try:
            page = await self.fetcher.fetch(
                item.url,
                limit=self.cfg.max_page_bytes,
                robots=self._robots_refusal,
                claim=lambda target: self._claim(target, claimed),
                content_types=[t.lower() for t in self.cfg.content_types],
            )
        except CrawlError as e:
            self.status[item.url] = self.state.refuse(item.url, e.reason, e.detail)
            self.outcomes[e.reason] += 1
        else:
            hrefs = await asyncio.to_thread(extract_links, page.body, page.url)
            self._store(page, item.depth, hrefs)
        finally:
            self.active.difference_update(claimed)
            self.busy[host_of(item.url)] -= 1
            self.in_flight -= 1

    def _claim(self, target: str, claimed: list[str]) -> None:
        """Take a redirect target for this fetch, unless it is fetched (or taken) on its own."""
        if target in self.active or self.status.get(target, QUEUED) != QUEUED:
            raise CrawlError(REDIRECT, f"redirects to {target}, which is crawled on its own")
        self.active.add(target)
        claimed.append(target)

    def _store(self, page: Page, depth: int, hrefs: list[str]) -> None:
        links = self._new(classify_links(hrefs, page.url, depth + 1, self.domains, self.cfg))
        added = self.state.store_page(page, depth, links)
        for url in page.chain:
            self.status[url] = FETCHED if url == page.url else kind_of(REDIRECT)
        self._enqueue(added)
        self.pages += 1
        self.body_bytes += len(page.body)
        self.outcomes[FETCHED] += 1
        if self.pages % PROGRESS_EVERY == 0:
            queued = sum(len(q) for q in self.queues.values())
            log.info("crawl: %d pages (%d bytes), about %d queued, this run: %s",
                     self.pages, self.body_bytes, queued, dict(self.outcomes))  # fmt: skip

    def _new(self, links: list[Link]) -> list[Link]:
        """The links not considered before, each once."""
        fresh: dict[str, Link] = {}
        for link in links:
            if link.url not in self.status:
                fresh.setdefault(link.url, link)
        return list(fresh.values())

    def _enqueue(self, added: list[tuple[int, Link]]) -> None:
        for seq, link in added:
            self.status[link.url] = QUEUED if link.reason is None else kind_of(link.reason)
            if link.reason is None:
                self._push(Queued(link.depth, seq, link.url, link.parent))

    async def _robots_refusal(self, url: str) -> str | None:
        return (await self._robots(origin_of(url))).refusal(url, self.cfg.user_agent)

    async def _robots(self, origin: str) -> Robots:
        if origin not in self.robots:
            async with self._robots_locks[origin]:
                if origin not in self.robots:
                    self.robots[origin] = rules = await self._load_robots(origin)
                    self._apply_robots(origin, rules)
        return self.robots[origin]

    async def _load_robots(self, origin: str) -> Robots:
        """robots.txt from the state, else fetched: 4xx (or too many redirects) allows all;
        any other failure disallows all for this run and is not stored (RFC 9309)."""
        stored = self.state.robots(origin)
        if stored is None:
            try:
                page = await self.fetcher.fetch(
                    f"{origin}/robots.txt", limit=ROBOTS_BYTES, truncate=True
                )
                stored = (page.status, page.body)
            except CrawlError as e:
                if e.reason not in (HTTP_STATUS, TOO_MANY_REDIRECTS):
                    log.warning("robots.txt of %s: %s (%s)", origin, e.reason, e.detail)
                    return Robots(None, f"{e.reason}: {e.detail}")
                stored = (e.status, b"")
            self.state.put_robots(origin, *stored)
        return Robots(Protego.parse(stored[1].decode("utf-8", "replace")))

    def _apply_robots(self, origin: str, rules: Robots) -> None:
        """Crawl-delay slows the host down; sitemaps are read once per origin."""
        if rules.parser is None:
            return
        delay = rules.parser.crawl_delay(self.cfg.user_agent)
        if delay is not None:
            self.fetcher.hosts.slow_down(host_of(origin), min(float(delay), self.cfg.max_delay_s))
        if self.cfg.sitemaps and not self.state.sitemaps_read(origin):
            self._spawn(self._read_sitemaps(origin, list(rules.parser.sitemaps)))

    async def _read_sitemaps(self, origin: str, listed: list[str]) -> None:
        """Queue the pages of `origin`'s sitemaps (robots.txt `Sitemap:` lines and
        /sitemap.xml) at depth 1; a sitemap index is followed one level."""
        docs, found = 0, []
        for url in dict.fromkeys([*listed, f"{origin}/sitemap.xml"]):
            doc = await self._sitemap(url)
            if doc is None:
                continue
            docs += 1
            is_index, locs = doc
            children = locs[:MAX_SITEMAPS] if is_index else []
            found += [] if is_index else self._listed(locs, url)
            for child in children:
                sub = await self._sitemap(child)
                if sub is not None and not sub[0]:
                    docs += 1
                    found += self._listed(sub[1], child)
        links = self._new(found)
        self._enqueue(self.state.add_sitemaps(origin, docs, links))
        log.info("sitemaps of %s: %d read, %d new URLs", origin, docs, len(links))

    def _listed(self, locs: list[str], sitemap: str) -> list[Link]:
        links = classify_links(locs, None, 1, self.domains, self.cfg)  # absolute URLs only
        return [replace(link, parent=sitemap) for link in links]

    async def _sitemap(self, url: str) -> tuple[bool, list[str]] | None:
        """(is an index, its URLs), or None (logged) when it cannot be read."""
        limit = self.cfg.max_page_bytes
        try:
            page = await self.fetcher.fetch(canonical_url(url), limit=limit)
            body = page.body
            if body[:2] == b"\x1f\x8b":  # a .xml.gz file served as it is
                inflater = Inflater("gzip", limit)
                if not inflater.feed(body):
                    raise CrawlError(TOO_LARGE, f"sitemap passed {limit} bytes when decoded")
                body = inflater.finish()
        except ValueError as e:
            log.info("sitemap %s not read: %s", url, e)
            return None
        except CrawlError as e:
            log.info("sitemap %s not read: %s (%s)", url, e.reason, e.detail)
            return None
        return parse_sitemap(body)


async def crawl_async(
    cfg: CrawlConfig, state: CrawlState, domains: list[str], verify: ssl.SSLContext | None = None
) -> int:
    """Run the crawl over `state`; return how many HTTP requests this run made."""
    async with Fetcher(cfg, domains, verify) as fetcher:
        await Crawler(cfg, state, domains, fetcher).run()
    return fetcher.requests
