"""URL filter false and true positives: refinery against datatrove's `URLFilter` (FineWeb's).

    .venv/bin/python bench/urls.py [--domains 20000] [--seed 0] [--json PATH]

Both filters get the same URLs, in one process each:
- ordinary: tests/data/urls/ordinary.txt.gz, 20,151 real URLs linked from the news and blog
  pages and crawl records the project ships (tests/data/make_urls.py); each one dropped is a
  false positive; and "ordinary, tricky": tests/data/urls/tricky.txt, 48 ordinary pages whose
  URL holds a blocked string inside an ordinary word of some language, or a phrase of the block
  lists that is ordinary language (written for the tests);
- adult URLs: the 19,587 URLs of UT1's adult list (pages of ordinary hosts, most of them French
  and Polish), and adult domains: --domains URLs `http://DOMAIN/`, for domains drawn at random
  from UT1's 4.56 million adult domains that are not in the domain list the filters are given,
  so that the words and strings in the URL decide. Each one dropped is a true positive.
UT1's lists are read from the archive datatrove ships (`make bench-venv`), so both sets of
positives are held out from the bundled domain list.

Filters: refinery's `filter_urls` with its default, bundled lists; datatrove 0.10.1's
`URLFilter` with its packaged word lists and the same bundled domain excerpt; and for the false
positives only, datatrove as its users run it, with UT1's full domain and URL lists (the source
of the positives, so its true positives would say nothing). The script exits 1 unless
refinery drops no more ordinary URLs than datatrove with the same domains, and at least as
many of each set of adult URLs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.web.url_filter import BUNDLED_FILES, UrlFilterConfig, blocked_domain, filter_urls

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PEER_SCRIPT = ROOT / "bench" / "urls_peers.py"
ORDINARY = ROOT / "tests" / "data" / "urls" / "ordinary.txt.gz"
TRICKY = ROOT / "tests" / "data" / "urls" / "tricky.txt"
ORDINARY_SETS = ("ordinary", "ordinary, tricky")
UT1_ARCHIVE = "datatrove/assets/url_filterblacklistsv0_3_0.tar.gz"


def ut1_lists() -> tuple[list[str], list[str]]:
    """UT1's adult domains and URLs, from the archive in datatrove's package."""
    found = sorted((ROOT / ".venv-bench").glob(f"lib/python*/site-packages/{UT1_ARCHIVE}"))
    if not found:
        sys.exit("bench/urls.py: datatrove's UT1 archive not found: run make bench-venv")
    with tarfile.open(found[0], "r:gz") as tar:
        read = {m.name: tar.extractfile(m).read().decode() for m in tar if m.isfile()}  # type: ignore[union-attr]
    return read["domains"].split(), read["urls"].split()


def url_sets(n_domains: int, seed: int) -> dict[str, list[str]]:
    """The ordinary URLs and the two sets of adult URLs."""
    ordinary = gzip.decompress(ORDINARY.read_bytes()).decode().split()
    domains, urls = ut1_lists()
    with gzip.open(BUNDLED_FILES["domains"], "rt", encoding="utf-8") as f:
        listed = frozenset(d.strip() for d in f if d.strip())
    held_out = [d for d in domains if blocked_domain(d, listed) is None]
    drawn = random.Random(seed).sample(held_out, min(n_domains, len(held_out)))
    lines = TRICKY.read_text(encoding="utf-8").splitlines()
    return {
        "ordinary": ordinary,
        "ordinary, tricky": [u for u in lines if u.strip() and not u.startswith("#")],
        "adult URLs": [f"http://{u}" for u in urls],
        "adult domains": [f"http://{d}/" for d in drawn],
    }


def refinery(urls: list[str]) -> tuple[list[str | None], float]:
    """The reason refinery drops each URL for (None: kept), and the seconds it took."""
    df = pl.DataFrame({"doc_id": [str(i) for i in range(len(urls))], "url": urls})
    cfg = UrlFilterConfig()
    filter_urls(df.head(1), cfg)  # reads the lists
    start = time.perf_counter()
    removed = filter_urls(df, cfg).removed
    seconds = time.perf_counter() - start
    reasons: list[str | None] = [None] * len(urls)
    for doc_id, reason in removed.select("doc_id", "reason").iter_rows():
        reasons[int(doc_id)] = reason
    return reasons, seconds


def datatrove(urls: list[str], tmp: Path, integrated: bool) -> tuple[list[str | None], float]:
    """The same from datatrove's filter, run under .venv-bench."""
    source, out = tmp / "urls.txt", tmp / "datatrove.json"
    source.write_text("\n".join(urls) + "\n", encoding="utf-8")
    lists = ["--integrated"] if integrated else ["--domains", str(BUNDLED_FILES["domains"])]
    command = [str(PEER_PYTHON), str(PEER_SCRIPT), "--urls", str(source), "--json", str(out)]
    subprocess.run([*command, *lists], check=True, env={"HF_HUB_OFFLINE": "1"})
    result = json.loads(out.read_text())
    return result["reasons"], result["seconds"]


def row(name: str, runs: dict[str, tuple[list[str | None], float]], sets: dict) -> dict:
    dropped = {k: sum(r is not None for r in reasons) for k, (reasons, _) in runs.items()}
    n = sum(len(sets[k]) for k in runs)
    urls_per_s = n / sum(seconds for _, seconds in runs.values())
    rates = {k: dropped[k] / len(sets[k]) for k in runs}
    false = [u for k in ORDINARY_SETS for u, r in zip(sets[k], runs[k][0], strict=True) if r]
    return {"name": name, "dropped": dropped, "rates": rates, "urls_per_s": urls_per_s,
            "false_positives": false}  # fmt: skip


def table(rows: list[dict], sets: dict[str, list[str]]) -> str:
    head = "| filter | " + " | ".join(f"{k} dropped (of {len(v):,})" for k, v in sets.items())
    lines = [head + " | URLs/s |", "|---" + "|---:" * (len(sets) + 1) + "|"]
    for r in rows:
        cells = [f"{r['dropped'][k]:,} ({100 * r['rates'][k]:.2f} %)" if k in r["dropped"]
                 else "n/a" for k in sets]  # fmt: skip
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['urls_per_s']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", type=int, default=20_000, help="adult domains drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        sys.exit(f"bench/urls.py: {PEER_PYTHON} is missing: run make bench-venv")
    sets = url_sets(args.domains, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ours = row("refinery, bundled lists", {k: refinery(v) for k, v in sets.items()}, sets)
        same = {k: datatrove(v, Path(tmp), integrated=False) for k, v in sets.items()}
        peer = row("datatrove, FineWeb word lists, same domains", same, sets)
        full = {k: datatrove(sets[k], Path(tmp), integrated=True) for k in ORDINARY_SETS}
        users = row("datatrove, FineWeb lists with UT1's full lists", full, sets)
    print(table([ours, peer, users], sets))
    for r in (ours, peer, users):
        print(f"{r['name']}: ordinary URLs dropped: {', '.join(r['false_positives']) or 'none'}")
    passed = all(ours["dropped"][k] <= peer["dropped"][k] for k in ORDINARY_SETS) and all(
        ours["dropped"][k] >= peer["dropped"][k] for k in sets if k not in ORDINARY_SETS
    )
    if args.json:
        args.json.write_text(json.dumps({"passed": passed, "rows": [ours, peer, users]}, indent=2))
    print(f"\nAcceptance: refinery drops no more ordinary URLs than datatrove with the same "
          f"domains, and at least as many adult ones: {'PASS' if passed else 'FAIL'}")  # fmt: skip
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
