import gzip
import io
import json
import os
import signal
import zlib

import polars as pl
import pytest
import trafilatura
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from shards.schema import EXTRACTION
from tasks.ingest import extract as ext
from tasks.ingest import ingest as ing
from tasks.ingest import inputs, warc
from tasks.output.write_shards import to_shard_table

ARTICLE = (
    "<html lang='de-AT'><head><title>Der Fluss</title></head><body><nav>Home | About</nav>"
    "<article><h1>Der Fluss</h1>"
    + "".join(
        f"<p>Der Fluss lief an der alten Mühle vorbei, und die Kinder sahen dem Wasser {i} "
        "Stunden lang mit stiller Neugier zu, während die Eltern über die Ernte sprachen.</p>"
        for i in range(8)
    )
    + "</article><footer>Impressum</footer></body></html>"
).encode()

# A news article as a JavaScript app serves it: an empty root element, and the article's text
# only in its JSON-LD. trafilatura's precise settings find nothing; its defaults read the JSON-LD.
STORY = " ".join(
    [
        "The city council voted on Tuesday to turn the old tram depot on Mill Street into a",
        "public library and a covered market. Work on the building, which has stood empty since",
        "the last trams ran in 1987, is to begin next spring and take two years. Residents had",
        "asked for a library in the north of the city for more than a decade, and the plan won by",
        "eleven votes to four. The market hall will open on weekends first, with forty stalls.",
    ]
)
HEADLINE = "Old tram depot to become a library"
LD = {"@context": "https://schema.org", "@type": "NewsArticle", "headline": HEADLINE}
JS_APP = (
    f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{HEADLINE}</title>"
    '<script type="application/ld+json">'
    + json.dumps({**LD, "articleBody": STORY})
    + "</script></head><body><div id='root'></div><noscript>You need to enable JavaScript to "
    "run this app.</noscript><script src='/static/js/main.3f9a.js'></script></body></html>"
).encode()
# The same story where the server renders only its first sentence, among a long menu: the
# precise settings find that sentence, short beside the page's text; the defaults find it all.
SECTIONS = ["News", "Politics", "Business", "Sport", "Culture", "Travel", "Weather", "Opinion"]
LEDE = (
    f"<!DOCTYPE html><html lang='en'><head><title>{HEADLINE}</title>"
    '<script type="application/ld+json">'
    + json.dumps({**LD, "articleBody": STORY})
    + "</script></head><body><nav><ul>"
    + "".join(f"<li><a href='/{i}'>{s} and more {s}</a></li>" for i, s in enumerate(SECTIONS * 6))
    + f"</ul></nav><main><h1>{HEADLINE}</h1><p>{STORY.split('. ')[0]}.</p>"
    "<div id='article-body' data-hydrate='true'></div></main></body></html>"
).encode()
# A guestbook: every entry in a comment container, which trafilatura leaves out with comments
# off, whatever its settings; only its baseline extractor reads them.
GUESTBOOK = (
    "<!DOCTYPE html><html lang='en'><head><title>Guestbook - Hill Farm Cottages</title></head>"
    "<body><div class='comments'>"
    + "".join(
        f"<div class='comment'><p>{entry}</p><span class='comment-author'>Guest {i}</span></div>"
        for i, entry in enumerate(
            [
                "We stayed in the garden cottage for a week in June and loved every minute.",
                "A lovely quiet place, spotless rooms, and the eggs come from the farm's hens.",
                "Perfect for walkers: the path up the hill starts at the gate, maps are lent.",
            ]
        )
    )
    + "</div></body></html>"
).encode()


def _precise(html: bytes) -> str:
    """What trafilatura's precise settings find, called directly, as the worker calls it."""
    cfg = ext.ExtractConfig()
    doc = trafilatura.bare_extraction(
        html, favor_precision=True, include_tables=cfg.include_tables,
        include_comments=cfg.include_comments, with_metadata=True,
    )  # fmt: skip
    return "" if doc is None else doc.text


@pytest.fixture(scope="module")
def extractor():
    with ext.Extractor(ext.ExtractConfig()) as ex:
        yield ex


def test_extracts_text_title_and_declared_language(extractor):
    page = extractor.extract(ARTICLE, "https://example.org/fluss")
    assert page.reason is None
    assert "alten Mühle" in page.text and "Impressum" not in page.text
    assert page.title == "Der Fluss"
    assert page.declared_lang == "de"


def test_declared_language_sources():
    assert ext.declared_language(b'<html class="x" lang="EN-gb">') == "en"
    meta = b'<html><meta http-equiv="Content-Language" content="fr-CA">'
    assert ext.declared_language(meta) == "fr"
    assert ext.declared_language(b"<html>", "pt-BR, en") == "pt"
    assert ext.declared_language(b"<html>") is None


def test_oversized_page_is_refused_without_extraction():
    with ext.Extractor(ext.ExtractConfig(max_html_bytes=1000)) as ex:
        page = ex.extract(ARTICLE, None)
        assert page.reason == ext.TOO_LARGE and "limit 1000" in page.detail
        assert ex._proc is None  # no worker was needed


def test_page_over_time_limit_kills_the_worker_and_the_next_page_works():
    with ext.Extractor(ext.ExtractConfig(timeout_s=0.001)) as ex:
        page = ex.extract(ARTICLE * 20, None)
        assert page.reason == ext.TIMEOUT and page.text is None
        assert ex._proc is None
        ex.cfg = ext.ExtractConfig()
        assert ex.extract(ARTICLE, None).reason is None


def test_a_dead_worker_is_replaced(extractor):
    assert extractor.extract(ARTICLE, None).reason is None
    os.kill(extractor._proc.pid, signal.SIGKILL)
    extractor._proc.wait()
    assert extractor.extract(ARTICLE, None).reason is None


def test_page_without_main_text(extractor):
    page = extractor.extract(b"<html><body><script>var x = 1;</script></body></html>", None)
    assert page.reason == ext.NO_TEXT and page.text is None and page.method is None
    assert "precision, default, recall, baseline" in page.detail


def test_precise_settings_first(extractor):
    assert extractor.extract(ARTICLE, None).method == "precision"


def test_defaults_find_what_the_precise_settings_miss(extractor):
    assert _precise(JS_APP) == ""  # else this test tests nothing
    page = extractor.extract(JS_APP, "https://example.org/depot")
    assert page.method == "default" and page.reason is None
    assert "Mill Street" in page.text and page.title == HEADLINE and page.declared_lang == "en"


def test_no_fallbacks_keeps_the_old_behaviour():
    page = ext.extract_page(JS_APP, None, ext.ExtractConfig(fallbacks=()))
    assert page.reason == ext.NO_TEXT and page.detail == "no main text found (precision)"


def test_a_short_text_gives_way_to_a_much_longer_one(extractor):
    short = _precise(LEDE)
    assert 0 < len(short) < 0.2 * len(trafilatura.html2txt(LEDE))
    page = extractor.extract(LEDE, None)
    assert page.method == "default" and len(page.text) > 1.5 * len(short)
    assert "eleven votes to four" in page.text
    # a retry must be that much longer to count: else the precise text stands
    stricter = ext.extract_page(LEDE, None, ext.ExtractConfig(longer_by=1000))
    assert stricter.method == "precision" and stricter.text == short


def test_baseline_extractor_is_the_last_resort(extractor):
    trafilatura_settings = ext.ExtractConfig(fallbacks=("default", "recall"))
    assert ext.extract_page(GUESTBOOK, None, trafilatura_settings).reason == ext.NO_TEXT
    page = extractor.extract(GUESTBOOK, None)
    assert page.method == "baseline" and "garden cottage" in page.text
    assert page.title == "Guestbook"  # metadata read for it alone (the site name trimmed)


def test_dechunk_and_content_decoding():
    body = b"Hello, chunked world"
    chunked = b"5\r\nHello\r\nf;ext=1\r\n, chunked world\r\n0\r\n\r\n"
    assert warc.dechunk(chunked) == body
    assert warc.decode_content(gzip.compress(body), "gzip", 100) == body
    assert warc.decode_content(zlib.compress(body), "deflate", 100) == body
    raw_deflate = zlib.compressobj(wbits=-15)
    assert warc.decode_content(raw_deflate.compress(body) + raw_deflate.flush(), "deflate", 99)
    bomb = gzip.compress(b"\0" * (10 << 20))
    assert len(warc.decode_content(bomb, "gzip", 1000)) == 1001  # stops just past the limit
    with pytest.raises(ValueError, match="unsupported"):
        warc.decode_content(body, "compress", 100)


def _response(writer, url, status, body, content_type="text/html", **headers):
    http = StatusAndHeaders(
        f"{status} X", [("Content-Type", content_type), *headers.items()], protocol="HTTP/1.1"
    )
    writer.write_record(
        writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http)
    )


def _wat(writer, url, warc_type, title):
    envelope = {
        "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": url},
        "Payload-Metadata": {
            "HTTP-Response-Metadata": {"HTML-Metadata": {"Head": {"Title": title}}}
        },
    }
    payload = json.dumps({"Envelope": envelope}).encode()
    writer.write_record(
        writer.create_warc_record(
            url, "metadata", payload=io.BytesIO(payload), warc_content_type="application/json"
        )
    )


def test_every_kind_of_record_ends_in_one_place(tmp_path):
    path = tmp_path / "crawl.warc.gz"
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        _response(w, "http://a.test/ok", 200, ARTICLE)
        _response(
            w, "http://a.test/gz", 200, gzip.compress(ARTICLE), **{"Content-Encoding": "gzip"}
        )
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(ARTICLE), ARTICLE)
        _response(w, "http://a.test/ch", 200, chunked, **{"Transfer-Encoding": "chunked"})
        _response(w, "http://a.test/404", 404, b"<html>gone</html>")
        _response(w, "http://a.test/pdf", 200, b"%PDF-1.4", content_type="application/pdf")
        _response(w, "http://a.test/zz", 200, ARTICLE, **{"Content-Encoding": "zz"})
        _response(w, "http://a.test/big", 200, ARTICLE * 40)
        _wat(w, "http://a.test/ok", "response", "Der Fluss")
        _wat(w, "http://a.test/ok", "request", None)  # about a request: not a document
    (tmp_path / "crawl.wat.gz").write_bytes(path.read_bytes())  # a WAT name reads the same
    files, _ = inputs.discover([str(path)])
    cfg = ing.IngestConfig(extract=ext.ExtractConfig(max_html_bytes=len(ARTICLE) * 2))
    result = ing.read_partition(tuple(files), cfg)
    kept = result.kept
    assert kept["url"].to_list() == ["http://a.test/ok", "http://a.test/gz", "http://a.test/ch"]
    assert kept["text"].str.contains("alten Mühle").all()
    assert kept["declared_lang"].to_list() == ["de"] * 3
    assert kept["date"].str.contains(r"^\d{4}-\d{2}-\d{2}$").all()  # the capture date here
    removed = {r["source"].rsplit(":", 1)[0]: r for r in result.removed.to_dicts()}
    got = sorted((r["reason"], r["kind"]) for r in result.removed.to_dicts())
    assert got == sorted(
        [
            (warc.HTTP_STATUS, "dropped"),
            (warc.NOT_HTML, "dropped"),
            (warc.BAD_ENCODING, "quarantined"),
            (ext.TOO_LARGE, "quarantined"),
            (warc.WAT_NO_TEXT, "dropped"),
        ]
    )
    assert removed  # every removed record names its file and offset
    wat = result.removed.filter(result.removed["reason"] == warc.WAT_NO_TEXT)
    assert "Der Fluss" in wat["detail"][0]


def test_extraction_column_names_the_settings_and_reaches_the_shards(tmp_path):
    path = tmp_path / "pages.warc.gz"
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for name, html in [("a", ARTICLE), ("b", JS_APP), ("c", GUESTBOOK)]:
            _response(w, f"http://a.test/{name}", 200, html)
        text = io.BytesIO(b"Text a WET file holds: nothing for refinery to extract.")
        w.write_record(w.create_warc_record("http://a.test/d", "conversion", payload=text))
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"id": "j1", "url": "http://a.test/e", "text": "Plain."}) + "\n")
    files, _ = inputs.discover([str(path), str(jsonl)])
    kept = ing.read_partition(tuple(files), ing.IngestConfig()).kept.sort("url")
    shards = pl.from_arrow(to_shard_table(kept))
    assert shards["url"].to_list() == [f"http://a.test/{c}" for c in "abcde"]
    assert shards[EXTRACTION].to_list() == ["precision", "default", "baseline", None, None]


def test_real_crawl_files_give_sensible_documents():
    files, _ = inputs.discover([str(ing_sample_web())])
    assert {f.name.split(".", 1)[1] for f in files} >= {"warc.gz", "warc.wet.gz", "warc.wat.gz"}
    result = ing.read_partition(tuple(files), ing.IngestConfig())
    kept = result.kept
    assert kept.height == 39  # 37 wget pages minus 4 logs, the CC page as WARC and as WET
    assert kept["title"].null_count() <= 1  # WET records carry no title
    assert (kept["declared_lang"] == "en").sum() > 30
    from_html = ~kept["source"].str.contains(r"\.wet\.gz:")
    assert kept.filter(from_html)[EXTRACTION].is_in(["precision", "default"]).all()
    assert kept.filter(~from_html)[EXTRACTION].is_null().all()
    assert kept["text"].str.len_chars().min() > 200
    semantic = kept.filter(kept["url"].str.contains("semanticscholar.org/about"))["text"][0]
    assert "Semantic Scholar" in semantic and "<div" not in semantic


def ing_sample_web():
    from tests.conftest import SAMPLE

    return SAMPLE / "web"
