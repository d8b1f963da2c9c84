import gzip
import json
import re
import unicodedata
from pathlib import Path

import polars as pl
import pytest

from tasks.web import url_filter as uf

DATA = Path(__file__).resolve().parents[1] / "data"
BENCH_DATA = Path(__file__).resolve().parents[2] / "bench" / "data"


def frame(*urls):
    return pl.DataFrame({"doc_id": [str(i) for i in range(len(urls))], "url": list(urls)})


def removed(result):
    return {r["doc_id"]: (r["reason"], r["detail"]) for r in result.removed.to_dicts()}


def test_bundled_lists_block_domains_words_phrases_and_soft_words():
    df = frame(
        "https://www.pornhub.com/view?x=1",  # a subdomain of a listed domain
        "https://example.com/2-girls-1-cup",
        "http://a.test/XXX/page",
        None,
        "https://en.wikipedia.org/wiki/Sex_education",  # one soft word: kept
        "https://pornhub.com.example.org/",  # not a parent domain, but a blocked string
        "https://x.test/sexy-nude-pics",
        "https://news.example.co.uk/article?id=3",
    )
    result = uf.filter_urls(df, uf.UrlFilterConfig())
    assert result.kept["doc_id"].to_list() == ["3", "4", "7"]
    assert removed(result) == {
        "0": (uf.BLOCKED_DOMAIN, "pornhub.com"),
        "1": (uf.BLOCKED_SUBWORD, "2girls1cup"),
        "2": (uf.BLOCKED_WORD, "xxx"),
        "5": (uf.BLOCKED_SUBWORD, "porn"),
        "6": (uf.SOFT_WORDS, "sexy, nude"),
    }
    assert set(result.removed["stage"]) == {"url_filter"}


def test_lists_are_overridable(tmp_path):
    domains = tmp_path / "domains.txt.gz"
    domains.write_bytes(gzip.compress(b"# my list\nspam.test\n"))
    cfg = uf.UrlFilterConfig(
        domain_files=[str(domains)],
        word_files=[],
        subword_files=[],
        block_words=["casino"],
        allow_domains=[],
        soft_word_threshold=3,
    )
    df = frame(
        "http://a.spam.test/",
        "http://pornhub.com/",
        "http://b.test/online-casino",
        "http://c.test/sexy-nude",
    )
    result = uf.filter_urls(df, cfg)
    assert removed(result) == {
        "0": (uf.BLOCKED_DOMAIN, "spam.test"),
        "2": (uf.BLOCKED_WORD, "casino"),
    }


def test_allow_domains_overrides_the_lists():
    cfg = uf.UrlFilterConfig(block_domains=["spam.test"], allow_domains=["pornhub.com"])
    result = uf.filter_urls(frame("http://a.spam.test/", "http://pornhub.com/"), cfg)
    assert result.kept["doc_id"].to_list() == ["1"]


def test_missing_list_is_named_in_one_line():
    from flows.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"url_filter.domain_files: .*no such file: /nope"):
        load_config(sets=["url_filter.domain_files=[/nope]"])


def test_blocked_domain_checks_every_parent():
    domains = frozenset({"example.com"})
    assert uf.blocked_domain("a.b.example.com", domains) == "example.com"
    assert uf.blocked_domain("example.com.", domains) == "example.com"
    assert uf.blocked_domain("notexample.com", domains) is None
    assert uf.blocked_domain(None, domains) is None


def urls_in(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [u for line in f if (u := line.strip()) and not u.startswith("#")]


@pytest.mark.parametrize("name", ["ordinary.txt.gz", "tricky.txt"])
def test_no_ordinary_url_is_dropped(name):
    """20,151 real links from the shipped news pages and crawl records, and ordinary pages
    whose URL holds a blocked string inside a word (tests/data/urls)."""
    urls = urls_in(DATA / "urls" / name)
    result = uf.filter_urls(frame(*urls), uf.UrlFilterConfig())
    dropped = {urls[int(i)]: why for i, why in removed(result).items()}
    assert dropped == {}


def test_platform_hosts_are_not_searched_but_their_users_are():
    df = frame(
        "https://foodblog.blogspot.com/2020/01/g-spot-pepper.html",  # "g spot" as tokens
        "https://sciencebites.blogspot.com/spot-the-difference",
        "https://free-porn-pics.blogspot.com/",
        "https://xxx.wordpress.com/",
        "https://blogspot.com/",
    )
    cfg = uf.UrlFilterConfig(block_words=["g spot"], block_domains=["blogspot.com"])
    assert removed(uf.filter_urls(df, cfg)) == {
        "0": (uf.BLOCKED_SUBWORD, "gspot"),
        "2": (uf.BLOCKED_WORD, "porn"),
        "3": (uf.BLOCKED_WORD, "xxx"),
    }


def test_phrases_match_whole_tokens_or_the_start_of_a_host_label():
    cfg = uf.UrlFilterConfig(word_files=[], subword_files=[], block_words=["g spot", "free sex"])
    df = frame(
        "https://a.test/the-g-spot-myth",
        "https://a.test/gspot/",
        "https://gspotclinic.test/",
        "https://www.freesexclips.test/",
        "https://myblogspot.test/",  # inside a token of the path or a label: kept
        "https://a.test/blogspot-tips",
        "https://bigspotlight.test/",
        "https://a.test/carefree-sexton-family",
    )
    assert removed(uf.filter_urls(df, cfg)) == {
        "0": (uf.BLOCKED_SUBWORD, "gspot"),
        "1": (uf.BLOCKED_SUBWORD, "gspot"),
        "2": (uf.BLOCKED_SUBWORD, "gspot"),
        "3": (uf.BLOCKED_SUBWORD, "freesex"),
    }


def test_allow_words_are_taken_out_before_strings_are_searched():
    df = frame("https://www.ansporn.test/", "https://a.test/fersensporn", "https://porn.test/")
    assert removed(uf.filter_urls(df, uf.UrlFilterConfig())) == {
        "2": (uf.BLOCKED_WORD, "porn"),
    }
    cfg = uf.UrlFilterConfig(allow_files=[], block_domains=["porn.test"])
    assert set(removed(uf.filter_urls(df, cfg))) == {"0", "1", "2"}


def test_soft_words_are_counted_once():
    df = frame("https://shop.test/main-coon/blanket-for-maine-coon-cats", "https://a.test/nude-sex")
    assert removed(uf.filter_urls(df, uf.UrlFilterConfig())) == {
        "1": (uf.SOFT_WORDS, "nude, sex"),
    }


def vocabulary() -> set[str]:
    """Words of ordinary text in about 500 languages: Wikipedia paragraphs and the UDHR,
    lower-cased and without accents, as they would appear in a URL."""
    words: set[str] = set()
    files = [DATA / "sample" / "wiki.jsonl.gz", BENCH_DATA / "udhr.jsonl.gz"]
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                text = unicodedata.normalize("NFKD", json.loads(line)["text"].lower())
                words |= set(re.findall(r"[a-z0-9]+", text.encode("ascii", "ignore").decode()))
    return words


def test_bundled_strings_are_inside_no_ordinary_word():
    """A one-word blocked string is matched anywhere, so no ordinary word may hold one, but
    for the allow list's words."""
    lists = uf.block_lists(uf.UrlFilterConfig())
    blocked = [*lists.subwords, *lists.words]
    holders = {
        w: [s for s in lists.subwords if s in w and s != w]
        for w in vocabulary()
        if not any(a in w for a in lists.allow_words)
    }
    assert {w: s for w, s in holders.items() if s} == {}
    assert len(blocked) > 150
