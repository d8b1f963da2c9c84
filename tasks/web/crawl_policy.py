"""What the crawl may fetch: its config, the reasons a URL is refused or fails, and the pure URL
and address checks every link and every request hop goes through.

Also the records the other crawl modules pass around: `Link` (a URL found, refused or queued),
`Page` (a response read to its end) and `CrawlError` (a URL refused or failed, with its reason).
"""

import contextlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

from pydantic import BaseModel, Field, field_validator

from shards.schema import DROPPED, QUARANTINED

STAGE = "crawl"


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


class CrawlError(Exception):
    """A URL refused or failed, with its reason (a `crawl_*` constant above) and a detail."""

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.status = reason, detail, status


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
