"""Web data through the prepare flow: real crawl files, and a crawl of a local site."""

import pytest

from flows.config import load_config
from flows.prepare import prepare
from shards.reader import find_document, read_shards
from tests.conftest import SAMPLE
from tests.tasks.crawl_site import CrawlSite
from tests.tasks.test_crawl import SETTINGS

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_real_crawl_files_become_shards_with_sensible_text(tmp_path):
    manifest = prepare(inputs=[str(SAMPLE / "web")], output=str(tmp_path), config=load_config())
    shards = read_shards(tmp_path)
    assert manifest["stages"]["ingest"]["in"] == 43  # 39 pages, 4 wget logs, 0 WAT responses
    assert shards.height >= 15
    assert (shards["lang"] == "en").sum() >= shards.height - 2
    assert shards["url"].str.starts_with("https://").all()
    assert shards["title"].null_count() <= 1 and shards["date"].null_count() == 0
    assert (shards["declared_lang"] == "en").sum() >= shards.height - 3
    from_wet = shards["source"].str.contains(r"\.wet\.gz:")
    assert shards.filter(~from_wet)["extraction"].is_in(["precision", "default"]).all()
    assert shards.filter(from_wet)["extraction"].is_null().all()  # WET text is not extracted
    text = "\n".join(shards["text"])
    assert "Creative Commons" in text and "<div" not in text and "<script" not in text
    # the crawl fetched https://allenai.org/ three times: two are exact duplicates
    assert manifest["stages"]["exact_dedup"]["dropped"] == {"exact_dedup_duplicate": 2}


def test_prepare_crawls_its_seeds_first(tmp_path):
    with CrawlSite() as site:
        sets = [f"crawl.seeds=['{site.url('/')}']", "crawl.allow_hosts=['127.0.0.1']"]
        sets += [f"crawl.{key}={value}" for key, value in SETTINGS.items()]
        sets += ["quality.enabled=false", "minhash.enabled=false"]
        manifest = prepare(inputs=[], output=str(tmp_path), config=load_config(sets=sets))
    crawl = manifest["inputs"]["crawl"]
    assert crawl["stats"]["kept"] == manifest["stages"]["ingest"]["in"] > 5
    assert all(f.endswith(".warc.gz") for f in crawl["warc_files"])
    shards = read_shards(tmp_path)
    assert shards["url"].str.starts_with(site.url("/")).all()
    assert shards["text"].str.contains("river").any()
    again = prepare(inputs=[], output=str(tmp_path), config=load_config(sets=sets))
    assert again["fingerprint"] == manifest["fingerprint"]  # nothing new to crawl or read
    [refused] = find_document(tmp_path, site.url("/private/secret.html"))
    assert (refused["stage"], refused["reason"]) == ("crawl", "crawl_robots_disallowed")
    kept = find_document(tmp_path, site.url("/a"))
    assert [hit["where"] for hit in kept] == ["shard"]
