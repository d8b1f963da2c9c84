"""The crawl's breadth-first loop: queued URLs host by host within the limits, robots.txt and
sitemaps per origin, and each outcome recorded in the state before the next run could need it.
"""

import asyncio
import heapq
import logging
import ssl
from collections import Counter, defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from protego import Protego

from tasks.web.crawl_content import Inflater, extract_links, parse_sitemap
from tasks.web.crawl_fetch import Fetcher
from tasks.web.crawl_policy import (
    FETCHED,
    HTTP_STATUS,
    QUEUED,
    REDIRECT,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    CrawlConfig,
    CrawlError,
    Link,
    Page,
    canonical_url,
    classify_links,
    host_of,
    kind_of,
    origin_of,
)
from tasks.web.crawl_state import CrawlState

log = logging.getLogger("refinery.crawl")

ROBOTS_BYTES = 512 << 10  # RFC 9309: parse at least the first 500 KiB
MAX_SITEMAPS = 50  # sitemaps followed from one sitemap index
PROGRESS_EVERY = 100  # pages between progress lines


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
