"""URL filter: drop documents from blocked domains or with blocked words in their URL.

In: doc_id, url (documents without one pass). Out: the same rows, fewer.

Three rules, as FineWeb's URL filter has them, checked in this order:
- `url_filter_domain`: the host or any parent domain is on a domain list (`a.b.example.com`
  matches `example.com`), unless it is in `allow_domains`.
- `url_filter_word`: a URL token (a run of letters and digits, lower-cased) is a blocked word.
- `url_filter_subword`: a blocked phrase appears in the URL once everything but letters and
  digits is removed (`2 girls 1 cup` matches `.../2-girls-1-cup.html`).
- `url_filter_soft_words`: the URL has `soft_word_threshold` tokens that are soft words, words
  that are ordinary in some URLs (`/sex-education` passes, `/sexy-nude-...` does not).

The bundled lists are an excerpt of UT1's adult domain list (its 112,456 domains of at most 12
characters without a subdomain, of 4.56 million), the English LDNOOBW words, and a short list
of soft words (tasks/resources: NOTICE). Point `domain_files` at UT1's full list, one domain per
line (.gz works), for its whole coverage.
"""

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from prefect import task
from pydantic import BaseModel, Field, field_validator

from shards.schema import URL
from tasks.partition import StageDir, run_partition
from tasks.records import Rule, StageResult, StageStats, apply_rules

STAGE = "url_filter"
BUNDLED = "bundled"
RESOURCES = Path(__file__).parent / "resources"
BUNDLED_FILES = {
    "domains": RESOURCES / "url_blocklist" / "domains.txt.gz",
    "words": RESOURCES / "badwords" / "en.txt",
    "soft words": RESOURCES / "url_blocklist" / "soft_words.txt",
}

BLOCKED_DOMAIN = "url_filter_domain"
BLOCKED_WORD = "url_filter_word"
BLOCKED_SUBWORD = "url_filter_subword"
SOFT_WORDS = "url_filter_soft_words"


class UrlFilterConfig(BaseModel, frozen=True, extra="forbid"):
    """Block lists: files of one entry per line (`bundled` is the shipped list) plus inline
    entries. A word entry with a space or hyphen in it is a phrase (a subword rule)."""

    enabled: bool = True
    domain_files: list[str] = [BUNDLED]
    word_files: list[str] = [BUNDLED]
    soft_word_files: list[str] = [BUNDLED]
    soft_word_threshold: int = Field(2, ge=1)
    block_domains: list[str] = []
    block_words: list[str] = []
    allow_domains: list[str] = []

    @field_validator("domain_files", "word_files", "soft_word_files")
    @classmethod
    def _files_exist(cls, names: list[str]) -> list[str]:
        missing = [n for n in names if n != BUNDLED and not Path(n).is_file()]
        if missing:
            raise ValueError(f"no such file: {missing[0]}")
        return names


def _read_list(name: str, kind: str) -> list[str]:
    path = BUNDLED_FILES[kind] if name == BUNDLED else Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"url_filter: {kind} list not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [s for line in f if (s := line.strip().lower()) and not s.startswith("#")]


@dataclass(frozen=True)
class BlockLists:
    domains: frozenset[str]
    words: list[str]  # whole URL tokens
    soft: list[str]  # whole URL tokens, counted
    phrases: list[str]  # letters and digits only, matched anywhere


def block_lists(cfg: UrlFilterConfig) -> BlockLists:
    """The block lists of `cfg`, read once a process."""
    return _block_lists(cfg.model_dump_json())


@functools.cache
def _block_lists(cfg_json: str) -> BlockLists:
    cfg = UrlFilterConfig.model_validate_json(cfg_json)
    domains = {d for name in cfg.domain_files for d in _read_list(name, "domains")}
    domains = (domains | {d.lower() for d in cfg.block_domains}) - set(cfg.allow_domains)
    soft = {w for name in cfg.soft_word_files for w in _read_list(name, "soft words")}
    entries = [w for name in cfg.word_files for w in _read_list(name, "words")]
    entries += [w.lower() for w in cfg.block_words]
    words = {w for w in entries if w.isalnum()} - soft
    phrases = {"".join(c for c in w if c.isalnum()) for w in entries if not w.isalnum()}
    long_phrases = sorted(p for p in phrases if len(p) >= 4)  # shorter ones match too much
    return BlockLists(frozenset(domains), sorted(words), sorted(soft), long_phrases)


def blocked_domain(host: str | None, domains: frozenset[str]) -> str | None:
    """The entry of `domains` that `host` or one of its parent domains is, if any."""
    if not host:
        return None
    parts = host.rstrip(".").split(".")
    return next((d for i in range(len(parts)) if (d := ".".join(parts[i:])) in domains), None)


_HOST = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^:/?#\[\]]+)"


def filter_urls(df: pl.DataFrame, cfg: UrlFilterConfig) -> StageResult:
    """Drop the rows whose URL a block list matches, with the matching entry as detail."""
    lists = block_lists(cfg)
    url = pl.col(URL).str.to_lowercase()
    hosts = df.select(url.str.extract(_HOST, 1).alias("host"))["host"]
    matched = {h: blocked_domain(h, lists.domains) for h in hosts.drop_nulls().unique()}
    tokens = url.str.extract_all(r"[a-z0-9]+")
    soft = tokens.list.eval(pl.element().filter(pl.element().is_in(lists.soft)))
    tagged = df.with_columns(
        hosts.replace_strict(matched, default=None, return_dtype=pl.String).alias("_domain"),
        tokens.list.eval(pl.element().filter(pl.element().is_in(lists.words)))
        .list.first()
        .alias("_word"),
        url.str.replace_all(r"[^a-z0-9]", "")
        .str.extract_many(lists.phrases or [" "])
        .list.first()
        .alias("_phrase"),
        soft.alias("_soft"),
    )
    soft_hit = pl.col("_soft").list.len() >= cfg.soft_word_threshold
    rules = [
        Rule(BLOCKED_DOMAIN, pl.col("_domain").is_not_null(), pl.col("_domain")),
        Rule(BLOCKED_WORD, pl.col("_word").is_not_null(), pl.col("_word")),
        Rule(BLOCKED_SUBWORD, pl.col("_phrase").is_not_null(), pl.col("_phrase")),
        Rule(SOFT_WORDS, soft_hit, pl.col("_soft").list.join(", ")),
    ]
    result = apply_rules(tagged, STAGE, rules)
    return StageResult(result.kept.drop("_domain", "_word", "_phrase", "_soft"), result.removed)


@task(name="url_filter")
def url_filter(part: str, src: StageDir, out: StageDir, cfg: UrlFilterConfig) -> StageStats:
    """Filter one partition of `src` by URL into `out`."""
    return run_partition(src, out, part, lambda df: filter_urls(df, cfg))
