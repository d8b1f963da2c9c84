"""The WARC corpus of bench/e2e.py, built from the real pages in the repository.

    .venv/bin/python bench/e2e_corpus.py --pages 1200 --seed 0 --out data/bench/e2e/warc

Every record is an HTML page of a real site, as crawled:

- originals: the 181 pages of the scrapinghub article extraction benchmark
  (bench/data/extraction-scrapinghub, with their URLs) and the 38 HTML responses of the crawl
  samples in tests/data/sample/web (dolma and Common Crawl);
- rewritten pages: a scrapinghub page whose long paragraphs (`<p>` with 80 characters of text
  or more) hold its main text (see `is_template`), holding instead a body of random sentences
  from bench/data/dedup-pool.jsonl.gz (English, Chinese and Japanese, 80/10/10, drawn as
  bench/dedup_corpus.py draws them), under a new path on the same site: the site's navigation,
  sidebars and footers stay, as they do across a site's pages;
- near-duplicates (15 %): a copy of an original or rewritten page with 1-5 % of the words of its
  long paragraphs replaced, deleted or inserted, or one long paragraph removed, or both;
- exact duplicates (5 %): a copy, byte for byte, under another URL.

Each copy has a URL of its own. The records are shuffled and written as CC writes them: one
gzip member per record, a warcinfo record first, then a request and a response record per page
(HTTP 200, `Content-Type: text/html; charset=utf-8`, `WARC-Identified-Payload-Type`), in
--files files. The same --pages and --seed give the same bytes; a finished corpus is kept
(corpus.json beside the files is its stamp) and rebuilt only when they change.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import html
import json
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
from fastwarc.warc import ArchiveIterator, WarcRecordType

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dedup_corpus import DEFAULT_MIX, SPACED, LangPool, edit_chars, edit_words, load_pool
from dedup_corpus import sample_bodies as pool_bodies

from tasks.ingest.warc import dechunk

BENCH = Path(__file__).resolve().parent
SCRAPINGHUB = BENCH / "data" / "extraction-scrapinghub"
SAMPLE_WEB = BENCH.parent / "tests" / "data" / "sample" / "web"
VERSION = 2  # bump when the corpus changes for the same --pages and --seed
EXACT_SHARE, NEAR_SHARE = 0.05, 0.15
EDIT_RATE = (0.01, 0.05)
TEMPLATE_COVER = 0.8
LONG_CHARS = 80  # a paragraph with this much text is main text, not a caption or byline
EDIT_CHARS = 200  # text runs shorter than this inside a paragraph are left unedited
PARAGRAPH = re.compile(r"<p\b[^>]*>(.*?)</p\s*>", re.S | re.I)
TAG = re.compile(r"(<[^>]*>)")


@dataclass(frozen=True)
class Page:
    """One HTML page: where it was crawled, its markup, and the language its edits use."""

    url: str
    html: str
    lang: str = "en"
    kind: str = "original"  # original, rewritten, near, exact
    gold: str = ""  # the main text, where the benchmark gives it


def scrapinghub_pages() -> list[Page]:
    """The benchmark's pages with their URLs, in id order."""
    truth = json.loads((SCRAPINGHUB / "ground-truth.json").read_text())
    pages = []
    for path in sorted(SCRAPINGHUB.glob("html/*.html.gz")):
        gold = truth[path.name.split(".")[0]]
        markup = gzip.decompress(path.read_bytes()).decode("utf-8")
        pages.append(Page(gold["url"], markup, gold=gold["articleBody"]))
    return pages


def sample_pages() -> list[Page]:
    """The HTML responses of the crawl samples, their bodies de-chunked."""
    pages = []
    for path in sorted(SAMPLE_WEB.glob("*.warc.gz")):
        with path.open("rb") as stream:
            for rec in ArchiveIterator(stream, record_types=WarcRecordType.response):
                body = rec.reader.read()
                if rec.http_headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = dechunk(body)
                url = rec.headers.get("WARC-Target-URI", "").strip("<>")
                pages.append(Page(url, body.decode("utf-8")))
    return pages


def long_paragraphs(markup: str) -> list[re.Match]:
    """The `<p>` elements with at least LONG_CHARS characters of text."""
    found = PARAGRAPH.finditer(markup)
    return [m for m in found if len(TAG.sub("", m.group(1)).strip()) >= LONG_CHARS]


def is_template(page: Page) -> bool:
    """Whether a page's long paragraphs hold its main text, so that a rewritten copy's main
    text is the new body: 80 % of the gold text's words are in them, and they are at most
    1.5 times as long as it."""
    found = " ".join(html.unescape(TAG.sub("", m.group(1))) for m in long_paragraphs(page.html))
    gold = page.gold.split()
    if not gold or len(found) > 1.5 * len(page.gold):
        return False
    words = set(found.split())
    return sum(w in words for w in gold) >= TEMPLATE_COVER * len(gold)


def splice(markup: str, spans: list[tuple[int, int, str]]) -> str:
    """`markup` with each (start, end) span replaced by its text; spans in document order."""
    pieces, pos = [], 0
    for start, end, text in spans:
        pieces += [markup[pos:start], text]
        pos = end
    return "".join([*pieces, markup[pos:]])


def rewrite(template: Page, body: str, lang: str, url: str) -> Page:
    """`template` with its long paragraphs holding `body`'s paragraphs instead (the first ones
    filled in order, the last taking what is left, any further ones emptied)."""
    found = long_paragraphs(template.html)
    paras = [html.escape(p, quote=False) for p in body.split("\n\n")]
    last = len(found) - 1
    fill = [*paras[:last], " ".join(paras[last:])]
    fill += [""] * (len(found) - len(fill))
    spans = [(m.start(1), m.end(1), text) for m, text in zip(found, fill, strict=True)]
    return Page(url, splice(template.html, spans), lang, "rewritten")


def edit_runs(inner: str, edit: Callable[[str], str]) -> str:
    """`edit` applied to each text run of EDIT_CHARS or more between a paragraph's tags."""
    parts = TAG.split(inner)  # text at even places, tags at odd ones
    return "".join(
        edit(part) if i % 2 == 0 and len(part.strip()) >= EDIT_CHARS else part
        for i, part in enumerate(parts)
    )


def near_copy(page: Page, url: str, pool: LangPool, rng: np.random.Generator) -> Page:
    """A near-duplicate of `page`: some words edited, or a long paragraph dropped, or both."""
    found = long_paragraphs(page.html)
    how = ["words", "drop", "both"][int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
    if len(found) < 3:
        how = "words"
    rate = float(rng.uniform(*EDIT_RATE))
    edit_text = edit_words if page.lang in SPACED else edit_chars
    drop = int(rng.integers(1, len(found))) if how != "words" else -1
    spans = []
    for i, m in enumerate(found):
        if i == drop:
            spans.append((m.start(), m.end(), ""))
        elif how != "drop":
            text = edit_runs(m.group(1), lambda s: edit_text(s, rate, pool, rng))
            spans.append((m.start(1), m.end(1), text))
    return Page(url, splice(page.html, spans), page.lang, "near")


def with_path(url: str, path: str) -> str:
    """`url` on the same site with another path and no query."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def copy_url(url: str, k: int) -> str:
    """A URL for the `k`-th copy of a page: its own, with a query naming the copy."""
    parts = urlsplit(url)
    query = f"{parts.query}&copy={k}" if parts.query else f"copy={k}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def slug(body: str, k: int) -> str:
    """A path for a rewritten page: its first words, then its number, percent-encoded."""
    words = re.findall(r"\w+", body.lower())[:6]
    return "/articles/" + quote("-".join([*words, str(k)]))


def escaped_pools() -> dict[str, LangPool]:
    """The sentence pools, their edit vocabulary HTML-escaped (it goes into markup)."""
    pools = load_pool()
    return {
        lang: dataclasses.replace(pool, vocab=[html.escape(w, quote=False) for w in pool.vocab])
        for lang, pool in pools.items()
    }


def rewritten_pages(
    templates: list[Page], n: int, pools: dict[str, LangPool], rng: np.random.Generator
) -> list[Page]:
    """`n` rewritten pages, each on a random template, in languages drawn by DEFAULT_MIX."""
    langs = list(DEFAULT_MIX)
    weights = np.array(list(DEFAULT_MIX.values()))
    picks = rng.choice(len(langs), size=n, p=weights / weights.sum())
    pages = []
    for k, lang_i in enumerate(picks.tolist()):
        lang = langs[lang_i]
        body = pool_bodies(pools[lang], 1, rng)[0]
        template = templates[int(rng.integers(len(templates)))]
        pages.append(rewrite(template, body, lang, with_path(template.url, slug(body, k))))
    return pages


def make_pages(n_pages: int, seed: int) -> list[Page]:
    """The corpus's pages, shuffled: originals, rewritten pages, near and exact copies.

    Args:
        n_pages: Pages in all (the originals are a random subset when fewer than 219 fit).
        seed: Random seed; the same seed gives the same pages.
    """
    rng = np.random.default_rng(seed)
    real = scrapinghub_pages() + sample_pages()
    n_exact, n_near = round(EXACT_SHARE * n_pages), round(NEAR_SHARE * n_pages)
    n_base = n_pages - n_exact - n_near
    originals = [real[i] for i in sorted(rng.permutation(len(real))[: min(len(real), n_base)])]
    pools = escaped_pools()
    templates = [p for p in real if is_template(p)]
    base = originals + rewritten_pages(templates, n_base - len(originals), pools, rng)
    editable = [p for p in base if long_paragraphs(p.html)]
    copies = []
    for k in range(n_near + n_exact):
        near = k < n_near
        page = (editable if near else base)[int(rng.integers(len(editable if near else base)))]
        url = copy_url(page.url, k)
        if near:
            copies.append(near_copy(page, url, pools[page.lang], rng))
        else:
            copies.append(Page(url, page.html, page.lang, "exact"))
    pages = base + copies
    return [pages[i] for i in rng.permutation(len(pages))]


def warc_record(kind: str, url: str, date: str, record_id: str, block: bytes, extra=()) -> bytes:
    """One WARC/1.0 record as its own gzip member."""
    content_type = {"warcinfo": "application/warc-fields"}.get(
        kind, f"application/http; msgtype={kind}"
    )
    lines = [
        "WARC/1.0",
        f"WARC-Type: {kind}",
        f"WARC-Date: {date}",
        f"WARC-Record-ID: <urn:uuid:{record_id}>",
        *([f"WARC-Target-URI: {url}"] if url else []),
        *extra,
        f"Content-Type: {content_type}",
        f"Content-Length: {len(block)}",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    return gzip.compress(head + block + b"\r\n\r\n", compresslevel=6, mtime=0)


def page_records(page: Page, index: int, rng: np.random.Generator) -> bytes:
    """The request and response records of one page."""
    date = f"2024-05-{1 + index % 28:02d}T{index % 24:02d}:{index % 60:02d}:00Z"
    body = page.html.encode("utf-8")
    parts = urlsplit(page.url)
    target = parts.path or "/"
    target += f"?{parts.query}" if parts.query else ""
    request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "User-Agent: CCBot/2.0 (https://commoncrawl.org/faq/)\r\n\r\n").encode()  # fmt: skip
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body  # fmt: skip
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(2)]
    return warc_record("request", page.url, date, ids[0], request) + warc_record(
        "response", page.url, date, ids[1], response, ["WARC-Identified-Payload-Type: text/html"]
    )


def write_warcs(pages: list[Page], out: Path, n_files: int, seed: int) -> list[Path]:
    """The pages in `n_files` .warc.gz files of consecutive pages, each opened by a warcinfo."""
    rng = np.random.default_rng([seed, 1])
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(len(pages)), n_files)):
        path = out / f"bench-e2e-{i:05d}.warc.gz"
        info = b"software: refinery bench/e2e_corpus.py\r\nformat: WARC File Format 1.0\r\n"
        record_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        with path.open("wb") as f:
            f.write(warc_record("warcinfo", "", "2024-05-01T00:00:00Z", record_id, info))
            for index in chunk.tolist():
                f.write(page_records(pages[index], index, rng))
        paths.append(path)
    return paths


def ensure_corpus(out: Path, n_pages: int, seed: int, n_files: int = 4) -> dict:
    """Build the corpus in `out` unless its stamp says it is there; its stamp.

    Returns:
        The stamp: pages, seed, files, version, records by kind, and WARC bytes in all.
    """
    stamp_path = out / "corpus.json"
    want = {"pages": n_pages, "seed": seed, "files": n_files, "version": VERSION}
    if stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        if {k: stamp.get(k) for k in want} == want:
            return stamp
    for old in out.glob("*.warc.gz"):
        old.unlink()
    pages = make_pages(n_pages, seed)
    paths = write_warcs(pages, out, n_files, seed)
    kinds = {k: sum(p.kind == k for p in pages) for k in ("original", "rewritten", "near", "exact")}
    stamp = {**want, "kinds": kinds, "bytes": sum(p.stat().st_size for p in paths),
             "html_bytes": sum(len(p.html.encode("utf-8")) for p in pages)}  # fmt: skip
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


def describe(stamp: dict) -> str:
    """A corpus stamp as one line."""
    kinds = ", ".join(f"{n} {kind}" for kind, n in stamp["kinds"].items())
    size = f"{stamp['bytes'] / 1e6:.1f} MB gzipped, {stamp['html_bytes'] / 1e6:.1f} MB of HTML"
    return f"{stamp['pages']:,} pages ({kinds}) in {stamp['files']} WARC files, {size}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("data/bench/e2e/warc"))
    args = parser.parse_args()
    stamp = ensure_corpus(args.out, args.pages, args.seed, args.files)
    print(f"{args.out}: {describe(stamp)}")


if __name__ == "__main__":
    main()
