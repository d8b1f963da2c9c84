"""datatrove's URL filter over a file of URLs, run under .venv-bench (bench/urls.py calls it).

    .venv-bench/bin/python bench/urls_peers.py --urls URLS.txt --json OUT.json \\
        [--domains DOMAINS.txt.gz | --integrated]

`--domains`: datatrove's `URLFilter` with its packaged word, subword and soft word lists and
these domains (the lists refinery is given too); `--integrated`: as its users run it, with the
UT1 domain and URL lists it unpacks from its own package as well. The public suffix list is
tldextract's bundled snapshot, so nothing is fetched. The JSON holds, per URL, the reason it was
dropped for (null: kept) and the seconds the filtering took.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time

from datatrove.data import Document
from datatrove.pipeline.filters import URLFilter
from datatrove.utils._import_utils import ASSETS_PATH
from tldextract import TLDExtract


def packaged(name: str) -> list[str]:
    """One of the word lists datatrove ships and loads itself."""
    with open(os.path.join(ASSETS_PATH, name), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def make_filter(domains: str | None) -> URLFilter:
    if domains is None:
        url_filter = URLFilter()
        url_filter.download_data()  # unpacks the lists its package ships
    else:
        with gzip.open(domains, "rt", encoding="utf-8") as f:
            listed = [d.strip() for d in f if d.strip()]
        url_filter = URLFilter(
            extra_domains=listed,
            banned_words=packaged("banned_words.txt"),
            banned_subwords=packaged("banned_subwords.txt"),
            soft_banned_words=packaged("soft_banned_words.txt"),
            use_integrated_lists=False,
        )
    url_filter.tldextractor = TLDExtract(suffix_list_urls=())  # the bundled snapshot, offline
    return url_filter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", required=True)
    parser.add_argument("--json", required=True)
    lists = parser.add_mutually_exclusive_group(required=True)
    lists.add_argument("--domains")
    lists.add_argument("--integrated", action="store_true")
    args = parser.parse_args()
    with open(args.urls, encoding="utf-8") as f:
        urls = f.read().splitlines()
    url_filter = make_filter(None if args.integrated else args.domains)
    start = time.perf_counter()
    reasons = []
    for i, url in enumerate(urls):
        verdict = url_filter.filter(Document(text="", id=str(i), metadata={"url": url}))
        reasons.append(None if verdict is True else verdict[1])
    seconds = time.perf_counter() - start
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"reasons": reasons, "seconds": seconds}, f)


if __name__ == "__main__":
    main()
