"""URL filter: drop documents from blocked domains or with blocked words in their URL.

In: doc_id, url (documents without one pass). Out: the same rows, fewer.

Four rules, as FineWeb's URL filter has them, checked in this order:
- `url_filter_domain`: the host or any parent domain is on a domain list (`a.b.example.com`
  matches `example.com`), unless the entry is allowed.
- `url_filter_word`: a URL token (a run of letters and digits, lower-cased) is a blocked word.
- `url_filter_subword`: a blocked string appears in the URL. A string of one word (`pornhub`) is
  matched anywhere once everything but letters and digits is removed, so the bundled ones are
  strings no ordinary word of any language contains. A phrase of several words (`2 girls 1
  cup`) is matched as whole tokens (`/2-girls-1-cup.html`, `/2girls1cup/`), or written together
  at the start of a host name's label (`2girls1cup.example`), so that it never fires inside an
  ordinary word (`gspot` is not in `blogspot`, nor `sexvideo` in `essex-video`).
- `url_filter_soft_words`: the URL has `soft_word_threshold` tokens that are soft words, words
  that are ordinary in some URLs (`/sex-education` passes, `/sexy-nude-...` does not).

An allow list exempts what is known to be ordinary: hosts (blog and site platforms such as
blogspot.com, whose own name is not searched, while their users' subdomains and paths are) and
words that contain a blocked string (`essex`, `pornography`), taken out before strings are
searched for.

The bundled lists are an excerpt of UT1's adult domain list (its 112,456 domains of at most 12
characters without a subdomain, of 4.56 million) and FineWeb's word, soft word and subword lists,
curated (tasks/resources: NOTICE). Point `domain_files` at UT1's full list, one domain per line
(.gz works), for its whole coverage.
"""

import functools
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from prefect import task
from pydantic import BaseModel, Field, field_validator

from shards.schema import URL
from tasks.partition import StageDir, run_partitions
from tasks.records import Rule, StageResult, StageStats, apply_rules

STAGE = "url_filter"
BUNDLED = "bundled"
_LISTS = Path(__file__).parents[1] / "resources" / "url_blocklist"
BUNDLED_FILES = {
    "domains": _LISTS / "domains.txt.gz",
    "words": _LISTS / "words.txt",
    "soft words": _LISTS / "soft_words.txt",
    "subwords": _LISTS / "subwords.txt",
    "allow": _LISTS / "allow.txt",
}

BLOCKED_DOMAIN = "url_filter_domain"
BLOCKED_WORD = "url_filter_word"
BLOCKED_SUBWORD = "url_filter_subword"
SOFT_WORDS = "url_filter_soft_words"


class UrlFilterConfig(BaseModel, frozen=True, extra="forbid"):
    """Block and allow lists: files of one entry per line (`bundled` is the shipped list) plus
    inline entries. A word entry with a space or hyphen in it is a phrase (a subword rule)."""

    enabled: bool = True
    domain_files: list[str] = [BUNDLED]
    word_files: list[str] = [BUNDLED]
    soft_word_files: list[str] = [BUNDLED]
    subword_files: list[str] = [BUNDLED]
    allow_files: list[str] = [BUNDLED]
    soft_word_threshold: int = Field(2, ge=1)
    block_domains: list[str] = []
    block_words: list[str] = []
    block_subwords: list[str] = []
    allow_domains: list[str] = Field([], description="hosts never blocked as domains")
    allow_words: list[str] = Field([], description="ordinary words that contain a blocked one")

    @field_validator(
        "domain_files", "word_files", "soft_word_files", "subword_files", "allow_files"
    )
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


def _words(entry: str) -> list[str]:
    """The words of a list entry: its runs of letters and digits."""
    return re.findall(r"[a-z0-9]+", entry.lower())


def _singles_and_phrases(entries: list[str]) -> tuple[set[str], set[tuple[str, ...]]]:
    """The one-word entries, and the words of each entry of several (a phrase)."""
    words = [tuple(w) for e in entries if (w := _words(e))]
    return {w[0] for w in words if len(w) == 1}, {w for w in words if len(w) > 1}


@dataclass(frozen=True)
class BlockLists:
    domains: frozenset[str]
    words: list[str]  # whole URL tokens
    soft: list[str]  # whole URL tokens, counted
    subwords: list[str]  # letters and digits only, matched anywhere
    phrases: list[tuple[str, ...]]  # glued in host names, whole tokens elsewhere
    allow_hosts: tuple[str, ...]  # their own name is not searched
    allow_words: list[str]  # taken out of the URL before subwords and phrases are searched


def block_lists(cfg: UrlFilterConfig) -> BlockLists:
    """The block lists of `cfg`, read once a process."""
    return _block_lists(cfg.model_dump_json())


def _read_all(names: list[str], kind: str, inline: list[str]) -> list[str]:
    return [e for name in names for e in _read_list(name, kind)] + [e.lower() for e in inline]


@functools.cache
def _block_lists(cfg_json: str) -> BlockLists:
    cfg = UrlFilterConfig.model_validate_json(cfg_json)
    allowed = _read_all(cfg.allow_files, "allow", cfg.allow_domains)
    hosts = {a.strip(".") for a in allowed if "." in a}
    allow_words = {"".join(_words(a)) for a in [*allowed, *cfg.allow_words] if "." not in a}
    soft = set(_read_all(cfg.soft_word_files, "soft words", []))
    words, phrases = _singles_and_phrases(_read_all(cfg.word_files, "words", cfg.block_words))
    subs, sub_phrases = _singles_and_phrases(
        _read_all(cfg.subword_files, "subwords", cfg.block_subwords)
    )
    phrases |= sub_phrases
    return BlockLists(
        domains=frozenset(set(_read_all(cfg.domain_files, "domains", cfg.block_domains)) - hosts),
        words=sorted(words - soft),
        soft=sorted(soft),
        subwords=sorted(s for s in subs if len(s) >= 4),  # shorter ones match too much
        phrases=sorted(p for p in phrases if len("".join(p)) >= 4),
        allow_hosts=tuple(sorted(hosts, key=len, reverse=True)),
        allow_words=sorted(w for w in allow_words if w),
    )


def blocked_domain(host: str | None, domains: frozenset[str]) -> str | None:
    """The entry of `domains` that `host` or one of its parent domains is, if any."""
    if not host:
        return None
    parts = host.rstrip(".").split(".")
    return next((d for i in range(len(parts)) if (d := ".".join(parts[i:])) in domains), None)


def searched_host(host: str | None, allow_hosts: tuple[str, ...]) -> str:
    """The part of `host` its words are searched in: all of it, less an allowed host it is or
    is under (`my-blog.blogspot.com` gives `my-blog`)."""
    host = (host or "").rstrip(".")
    for allowed in allow_hosts:
        if host == allowed or host.endswith("." + allowed):
            return host[: -len(allowed)].rstrip(".")
    return host


def phrase_pattern(phrases: list[tuple[str, ...]]) -> str:
    """A regex that captures any of `phrases` as whole tokens, its words with or without
    separators between them (`2-girls-1-cup`, `2girls1cup`), never inside a longer token."""
    alternatives = "|".join(r"[^a-z0-9]*".join(map(re.escape, p)) for p in phrases) or "$^"
    return rf"(?:^|[^a-z0-9])({alternatives})(?:[^a-z0-9]|$)"


def host_phrase_pattern(phrases: list[tuple[str, ...]]) -> str:
    """A regex that captures any of `phrases` written together at the start of a host name's
    label (`freesexclips.example`), since host names run words together; one inside a label
    is likelier part of an ordinary word (`gspot` in `myblogspot`)."""
    glued = "|".join(re.escape("".join(p)) for p in phrases) or "$^"
    return rf"(?:^|\.)({glued})"


_SCHEME = r"^[a-z][a-z0-9+.-]*://"
_HOST = _SCHEME + r"(?:[^@/?#]*@)?([^:/?#\[\]]+)"
_AUTHORITY = _SCHEME + r"[^/?#]*"


def blocked_string(host: pl.Expr, path: pl.Expr, lists: BlockLists) -> pl.Expr:
    """The first subword or phrase of `lists` in a URL's searched host and rest (lower-case),
    letters and digits only; null if none."""
    allowed = lists.allow_words or ["\x00"]
    host = host.str.replace_many(allowed, ["."] * len(allowed)).str.replace_all(r"[^a-z0-9.]", "")
    path = path.str.replace_many(allowed, ["/"] * len(allowed))
    return pl.coalesce(
        pl.concat_str(host, path)
        .str.replace_all(r"[^a-z0-9]", "")
        .str.extract_many(lists.subwords or [" "])
        .list.first(),
        host.str.extract(host_phrase_pattern(lists.phrases), 1),
        path.str.extract(phrase_pattern(lists.phrases), 1).str.replace_all(r"[^a-z0-9]", ""),
    )


def filter_urls(df: pl.DataFrame, cfg: UrlFilterConfig) -> StageResult:
    """Drop the rows whose URL a block list matches, with the matching entry as detail."""
    lists = block_lists(cfg)
    url = pl.col(URL).str.to_lowercase()
    hosts = df.select(url.str.extract(_HOST, 1).alias("host"))["host"]
    unique = hosts.drop_nulls().unique()
    domain = {h: blocked_domain(h, lists.domains) for h in unique}
    searched = {h: searched_host(h, lists.allow_hosts) for h in unique}
    host = pl.lit(hosts.replace_strict(searched, default="", return_dtype=pl.String))
    rest = url.str.replace(_AUTHORITY, "").fill_null("")
    tokens = pl.concat_str(host, pl.lit(" "), rest).str.extract_all(r"[a-z0-9]+")
    tagged = df.with_columns(
        hosts.replace_strict(domain, default=None, return_dtype=pl.String).alias("_domain"),
        tokens.list.set_intersection(pl.lit(lists.words or [""])).list.first().alias("_word"),
        blocked_string(host, rest, lists).alias("_phrase"),
        tokens.list.eval(pl.element().filter(pl.element().is_in(lists.soft)))
        .list.unique(maintain_order=True)
        .alias("_soft"),
    )
    rules = [
        Rule(BLOCKED_DOMAIN, pl.col("_domain").is_not_null(), pl.col("_domain")),
        Rule(BLOCKED_WORD, pl.col("_word").is_not_null(), pl.col("_word")),
        Rule(BLOCKED_SUBWORD, pl.col("_phrase").is_not_null(), pl.col("_phrase")),
        Rule(
            SOFT_WORDS,
            pl.col("_soft").list.len() >= cfg.soft_word_threshold,
            pl.col("_soft").list.join(", "),
        ),
    ]
    result = apply_rules(tagged, STAGE, rules)
    return StageResult(result.kept.drop("_domain", "_word", "_phrase", "_soft"), result.removed)


@task(name="url_filter")
def url_filter(parts: list[str], src: StageDir, out: StageDir, cfg: UrlFilterConfig) -> StageStats:
    """Filter partitions of `src` by URL into `out`."""
    return run_partitions(src, out, parts, lambda df: filter_urls(df, cfg))
