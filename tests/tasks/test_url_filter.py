import gzip

import polars as pl
import pytest

from tasks import url_filter as uf


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
        "https://pornhub.com.example.org/",  # the listed name is not a parent domain here
        "https://x.test/sexy-nude-pics",
        "https://news.example.co.uk/article?id=3",
    )
    result = uf.filter_urls(df, uf.UrlFilterConfig())
    assert result.kept["doc_id"].to_list() == ["3", "4", "5", "7"]
    assert removed(result) == {
        "0": (uf.BLOCKED_DOMAIN, "pornhub.com"),
        "1": (uf.BLOCKED_SUBWORD, "2girls1cup"),
        "2": (uf.BLOCKED_WORD, "xxx"),
        "6": (uf.SOFT_WORDS, "sexy, nude"),
    }
    assert set(result.removed["stage"]) == {"url_filter"}


def test_lists_are_overridable(tmp_path):
    domains = tmp_path / "domains.txt.gz"
    domains.write_bytes(gzip.compress(b"# my list\nspam.test\n"))
    cfg = uf.UrlFilterConfig(
        domain_files=[str(domains)],
        word_files=[],
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
