"""Crawl: fetch web pages politely and safely into WARC files, resumably.

In: seed URLs (`CrawlConfig.seeds`). Out, under the output directory:
- `warc/crawl-NNNNN.warc.gz`: a warcinfo record, then one response record per page (the final
  URL after redirects, the status line and headers, the decoded body). The file being written is
  `crawl-NNNNN.warc.gz.part`; only finished `.warc.gz` files are inputs for `ingest`.
- `state.sqlite`: the frontier and fetched set, the robots.txt cache and the WARC bookkeeping
  that let a killed crawl resume without fetching a page twice.
- `ledger.arrow` (`LEDGER_SCHEMA`): every refused (dropped) or failed (quarantined) URL.
- `crawl.json`: the stage's stats and a few totals.

This module runs the stage and names its config and reasons. The parts, each importing only
those before it: `crawl_policy` (config, reasons, URL and address checks), `crawl_content`
(body decoding, links, sitemaps), `crawl_state` (SQLite state and WARC files), `crawl_fetch`
(safe fetches, politeness) and `crawl_loop` (the breadth-first loop).
"""

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from shards.workdir import crawl_ledger, crawl_state, crawl_summary, crawl_warcs
from shards.writer import remove_temp_files, write_json, write_table
from tasks.records import StageStats
from tasks.web.crawl_content import extract_links, parse_sitemap
from tasks.web.crawl_loop import crawl_async
from tasks.web.crawl_policy import (
    BAD_ENCODING,
    BAD_SCHEME,
    BAD_URL,
    CONNECTION_ERROR,
    DNS,
    FETCHED,
    HTTP_ERROR,
    HTTP_STATUS,
    LIMIT,
    MAX_DEPTH,
    NOT_HTML,
    OFF_DOMAIN,
    PRIVATE_ADDRESS,
    QUARANTINE_REASONS,
    QUEUED,
    REDIRECT,
    ROBOTS_DISALLOWED,
    STAGE,
    TIMEOUT,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    CrawlConfig,
    Link,
    Page,
    address_refusal,
    canonical_url,
    check_seed,
    classify_links,
    host_of,
    kind_of,
    policy_refusal,
    read_seeds,
)
from tasks.web.crawl_state import CrawlState

__all__ = [  # the stage's config, reasons and functions, wherever they are defined
    "BAD_ENCODING", "BAD_SCHEME", "BAD_URL", "CONNECTION_ERROR", "DNS", "FETCHED", "HTTP_ERROR",
    "HTTP_STATUS", "LIMIT", "MAX_DEPTH", "NOT_HTML", "OFF_DOMAIN", "PRIVATE_ADDRESS",
    "QUARANTINE_REASONS", "QUEUED", "REDIRECT", "ROBOTS_DISALLOWED", "STAGE", "TIMEOUT",
    "TOO_LARGE", "TOO_MANY_REDIRECTS", "CrawlConfig", "CrawlState", "Link", "Page",
    "address_refusal", "canonical_url", "check_seed", "classify_links", "crawl",
    "extract_links", "host_of", "kind_of", "parse_sitemap", "policy_refusal", "read_seeds",
    "run_crawl",
]  # fmt: skip

log = logging.getLogger("refinery.crawl")


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
    start = time.perf_counter()
    seeds = [check_seed(seed) for seed in cfg.seeds]
    if not seeds and not crawl_state(output).exists():
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
    write_table(ledger, crawl_ledger(output))
    files = [p.name for p in crawl_warcs(output)]
    write_json({**stats.to_dict(), **summary, "requests": requests, "warc_files": files},
               crawl_summary(output))  # fmt: skip
    log.info("%s (%d WARC files at %s)", stats.summary(), len(files), state.warc_dir)
    return stats


@task(name="crawl")
def crawl(cfg: CrawlConfig, output: Path) -> dict[str, Any]:
    """Crawl `cfg.seeds` into WARC files under `output`, resuming what a killed run left
    (requests are retried inside, with back-off). Returns the stats and the WARC files."""
    stats = run_crawl(cfg, output)
    get_run_logger().info(stats.summary())
    files = [str(p) for p in crawl_warcs(output)]
    return {"output": str(output), "warc_files": files, "stats": stats.to_dict()}
