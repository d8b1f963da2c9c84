"""Build tests/data/urls/ordinary.txt.gz: real URLs of ordinary web pages, one per line.

    .venv/bin/python tests/data/make_urls.py

The URLs are the absolute http(s) links found in pages the project already ships: the 181 news
and blog pages of bench/data/extraction-scrapinghub (their links to articles, sections, shops,
social media and sources on 1,500 hosts) and the crawl records in tests/data/sample/web. The
URL filter's tests and bench/urls.py count every one of them that a filter drops as a false
positive. Sources and licences: tests/data/NOTICE.
"""

import gzip
import re
from pathlib import Path

from fastwarc.warc import ArchiveIterator

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "bench" / "data" / "extraction-scrapinghub" / "html"
WARCS = ROOT / "tests" / "data" / "sample" / "web"
OUT = ROOT / "tests" / "data" / "urls" / "ordinary.txt.gz"

# An absolute link in HTML or JSON: up to a quote, space, angle bracket or backslash.
LINK = re.compile(r"""https?://[^\s"'<>\\()]+""", re.I)
HOST = re.compile(r"^https?://([a-z0-9-]+\.)+[a-z]{2,}(:\d+)?([/?#]|$)", re.I)


def links(text: str) -> set[str]:
    """The absolute links of a page whose host is a well-formed domain name."""
    found = {m.group(0).rstrip(".,;)") for m in LINK.finditer(text)}
    return {u for u in found if HOST.match(u) and "&quot" not in u and len(u) <= 500}


def main() -> None:
    urls: set[str] = set()
    for page in sorted(PAGES.glob("*.html.gz")):
        urls |= links(gzip.decompress(page.read_bytes()).decode("utf-8", "replace"))
    for warc in sorted(WARCS.glob("*.warc*.gz")):
        with warc.open("rb") as f:
            for record in ArchiveIterator(f):
                if uri := (record.headers.get("WARC-Target-URI") or "").strip("<>"):
                    urls.add(uri)
                urls |= links(record.reader.read().decode("utf-8", "replace"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write("".join(f"{u}\n" for u in sorted(urls)).encode())
    print(f"{len(urls)} URLs -> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
