"""The network side of the crawl: safe fetches and per-host politeness.

Every request and every redirect hop is checked (scheme, allowed domain, the addresses the host
resolves to, robots.txt) and then sent to the very address that was checked, with the Host
header and, for https, the SNI name of the real host, so a DNS answer that changes after the
check (rebinding) cannot redirect the request and TLS still verifies the real host name. Each
host gets its own connection pool, so a connection is never shared between host names.
Bodies are decoded under the size cap by `tasks.web.crawl_content.Inflater`.
"""

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from tasks.retry import backoff_delay, retry_after, retryable
from tasks.web.crawl_content import Inflater, media_type
from tasks.web.crawl_policy import (
    BAD_URL,
    CONNECTION_ERROR,
    DNS,
    HTTP_ERROR,
    HTTP_STATUS,
    NOT_HTML,
    PRIVATE_ADDRESS,
    ROBOTS_DISALLOWED,
    TIMEOUT,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    CrawlConfig,
    CrawlError,
    Page,
    address_refusal,
    canonical_url,
    host_of,
    policy_refusal,
)

_REDIRECTS = {301, 302, 303, 307, 308}
_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"

RobotsCheck = Callable[[str], Awaitable[str | None]]
Claim = Callable[[str], None]


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
                self.hosts.hold(host, backoff_delay(attempt, self.cfg.backoff_s))
                continue
            if not retryable(reply.status):
                return reply
            if attempt > self.cfg.retries:
                detail = f"HTTP {reply.status} after {attempt} attempts"
                raise CrawlError(HTTP_ERROR, detail, reply.status)
            asked, cap = reply.retry_after, self.cfg.max_delay_s  # Retry-After, capped
            self.hosts.hold(host, backoff_delay(attempt, self.cfg.backoff_s, asked, cap))
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
            if retryable(status):
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
