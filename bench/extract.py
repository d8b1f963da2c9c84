"""Text extraction quality and speed: refinery's extractor against raw trafilatura and jusText.

    .venv/bin/python bench/extract.py [--data bench/data/extraction-scrapinghub] [--json PATH]

The pages are the 181 news and blog pages of the scrapinghub article extraction benchmark
(bench/data/extraction-scrapinghub, source and licence in bench/data/NOTICE): gzipped raw
HTML, all UTF-8, and the gold main text (`articleBody`) with the page's URL. Every contender
gets the same raw bytes and URL, one page after another:

- refinery: `tasks.ingest.extract.Extractor` with the default `ExtractConfig`, whose worker
  subprocess does the extraction under its time and size limits (trafilatura's precise
  settings, then its fallbacks where those find no text or a short one); `Page.text` is scored;
- refinery in-process: `tasks.ingest.extract.extract_page`, what the worker runs, called directly
  (no worker, no limits), so that the two rows apart are the cost of the worker;
- trafilatura, defaults: `trafilatura.extract(html, url=url)`, the plain-text output a user
  gets with the library's defaults (reader comments included);
- trafilatura, refinery's first settings: `trafilatura.bare_extraction` with the trafilatura
  options of the default `ExtractConfig`, as refinery's worker calls it first, but
  in-process, without limits, without the fallbacks and without the title and date that
  refinery reads once per page afterwards; `Document.text` is scored;
- jusText: `justext.justext` with the English stoplist and the parameters the benchmark's
  own run uses, non-boilerplate paragraphs joined with spaces.

Scores are the benchmark's (its `evaluate.py`): each text is cut into words (`\\w+`) and the
words into 4-gram shingles, counted with repeats (a text of 1 to 3 words is one shorter
shingle). Per page, true positives are the shingles the gold text and the output share,
false positives the output's others, false negatives the gold text's others. Precision is
averaged over the pages whose output has a shingle, recall over the pages whose gold text has
one (an empty output counts as recall 0 and not at all in precision), and F1 is the harmonic
mean of those two averages. The published figures on these pages: trafilatura 2.0.0 0.958,
readability 0.922, jusText 0.804, all the page's text (html-text) 0.665.

A second table scores refinery's text before and after `tasks.clean.normalize` (see
bench/extract_normalize.py for each normalize step). Besides the benchmark's F1 it gives a
token F1, computed the same way over whitespace-separated tokens, exact to the character:
the shingles see only `\\w+` words, so they cannot tell "don’t" from "don't", the tokens can.

Speed is pages per second over the whole set, one page at a time, timed from the first page
to the last (refinery's pages go through its worker process, so its figure includes passing
pages and results over the pipes); a warm-up page before the timed pass is not counted, nor is
starting refinery's worker. The fastest of --repeat passes counts. The contenders run one after
another, so take figures on an idle machine.
Acceptance: refinery's F1, to the 3 decimals the benchmark publishes, is at least trafilatura's
published 0.958 (0.9575 unrounded), and no page that trafilatura's defaults find text in is
left without text by refinery; the script exits 1 if not.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import justext
import trafilatura

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract_normalize import normalized, step_rows, steps_table

from tasks.clean.normalize import NormalizeConfig
from tasks.ingest.extract import ExtractConfig, Extractor, extract_page

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "extraction-scrapinghub"
GOAL_F1 = 0.958  # trafilatura 2.0.0 on these pages, as the benchmark publishes it
SHINGLE_WORDS = 4
WORD = re.compile(r"\w+")
# jusText as the benchmark runs it: length_low, length_high, stopwords_low, stopwords_high,
# max_link_density, max_heading_distance, no_headings.
JUSTEXT_ARGS = (50, 200, 0.1, 0.2, 0.2, 200, True)

Extract = Callable[[bytes, str], str | None]  # (html, url) -> main text


def shingles(text: str | None) -> Counter[tuple[str, ...]]:
    """The word 4-grams of a text with their counts; fewer words make one shorter shingle."""
    words = WORD.findall(text or "")
    if len(words) < SHINGLE_WORDS:
        return Counter([tuple(words)] if words else [])
    starts = range(len(words) - SHINGLE_WORDS + 1)
    return Counter(tuple(words[i : i + SHINGLE_WORDS]) for i in starts)


def tokens(text: str | None) -> Counter[str]:
    """The whitespace-separated tokens of a text with their counts, exact to the character."""
    return Counter((text or "").split())


def match(
    gold: str | None, output: str | None, units: Callable[[str | None], Counter] = shingles
) -> tuple[int, int, int]:
    """True positive, false positive and false negative counts of one page's shingles (or of
    other `units`)."""
    true, pred = units(gold), units(output)
    tp = sum((true & pred).values())
    return tp, pred.total() - tp, true.total() - tp


def score(counts: list[tuple[int, int, int]]) -> dict[str, float]:
    """Precision and recall averaged over pages, and F1 of the two averages.

    Args:
        counts: (tp, fp, fn) per page, from `match`.

    Returns:
        f1, precision and recall. A page with no output shingle is left out of precision and
        one with no gold shingle out of recall, as in the benchmark's `evaluate.py`.
    """
    precisions = [tp / (tp + fp) for tp, fp, _ in counts if tp + fp]
    recalls = [tp / (tp + fn) for tp, _, fn in counts if tp + fn]
    precision = statistics.mean(precisions) if precisions else 0.0
    recall = statistics.mean(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def load_pages(data: Path) -> list[dict]:
    """The pages as dicts of id, url, html (bytes) and gold text, in id order."""
    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for page_id, gold in sorted(truth.items()):
        html = gzip.decompress((data / "html" / f"{page_id}.html.gz").read_bytes())
        pages.append({"id": page_id, "url": gold["url"], "html": html,
                      "gold": gold["articleBody"]})  # fmt: skip
    return pages


def trafilatura_defaults(html: bytes, url: str) -> str | None:
    """trafilatura's plain-text output with the library's default options."""
    return trafilatura.extract(html, url=url)


def refinery_options() -> dict:
    """The trafilatura options of refinery's default `ExtractConfig`, as its worker passes them."""
    known = inspect.signature(trafilatura.bare_extraction).parameters
    options = {k: v for k, v in ExtractConfig().model_dump().items() if k in known}
    return {**options, "with_metadata": False}


def refinery_in_process(html: bytes, url: str) -> str | None:
    """refinery's extraction, fallbacks included, in this process and without limits."""
    return extract_page(html, url, ExtractConfig()).text


def trafilatura_with(options: dict) -> Extract:
    """trafilatura's main text (`Document.text`) with these options."""

    def extract(html: bytes, url: str) -> str | None:
        doc = trafilatura.bare_extraction(html, url=url, **options)
        return None if doc is None else doc.text

    return extract


def justext_text(html: bytes, url: str) -> str | None:
    """jusText's non-boilerplate paragraphs, as the benchmark runs it."""
    stoplist = justext.get_stoplist("English")
    paragraphs = justext.justext(html, stoplist, *JUSTEXT_ARGS)
    return " ".join(p.text for p in paragraphs if not p.is_boilerplate)


@contextmanager
def refinery() -> Iterator[tuple[Extract, dict[str, str]]]:
    """refinery's extractor, and per page URL the settings that found its text (`Page.method`)
    or the reason it gave for none."""
    outcomes: dict[str, str] = {}
    with Extractor(ExtractConfig()) as ex:  # its worker starts on the first (warm-up) page

        def extract(html: bytes, url: str) -> str | None:
            page = ex.extract(html, url)
            outcomes[url] = page.method or page.reason or "?"
            return page.text

        yield extract, outcomes


def timed(extract: Extract, pages: list[dict], repeat: int) -> tuple[list[str | None], float]:
    """Outputs of one pass over the pages and the fastest pass's pages per second."""
    extract(pages[0]["html"], pages[0]["url"])  # warm-up: imports, caches, lazy compiles
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = [extract(p["html"], p["url"]) for p in pages]
        best = min(best, time.perf_counter() - start)
    return outputs, len(pages) / best


def scores(pages: list[dict], outputs: Sequence[str | None]) -> dict[str, float]:
    """The benchmark's F1, precision and recall of the outputs, and the token F1."""
    pairs = list(zip(pages, outputs, strict=True))
    by_tokens = score([match(p["gold"], out, tokens) for p, out in pairs])
    return {**score([match(p["gold"], out) for p, out in pairs]), "token_f1": by_tokens["f1"]}


def empty(outputs: Sequence[str | None]) -> int:
    """How many outputs have no word."""
    return sum(not WORD.search(out or "") for out in outputs)


def run(name: str, extract: Extract, pages: list[dict], repeat: int) -> tuple[dict, list]:
    """One contender's row (its scores, speed and the pages it gave no text for) and outputs."""
    outputs, docs_per_s = timed(extract, pages, repeat)
    row = {"name": name, **scores(pages, outputs), "docs_per_s": docs_per_s}
    return {**row, "empty": empty(outputs)}, outputs


def normalize_table(pages: list[dict], extracted: list, after: list) -> tuple[str, list[dict]]:
    """refinery's text before and after normalize: scores and pages without text."""
    rows = [{"text": t, **scores(pages, out), "empty": empty(out)}
            for t, out in (("extracted", extracted), ("normalized", after))]  # fmt: skip
    lines = ["| refinery's text | F1 | precision | recall | token F1 | no text |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        cells = [r["text"], *(f"{r[k]:.4f}" for k in ("f1", "precision", "recall", "token_f1"))]
        lines.append("| " + " | ".join([*cells, str(r["empty"])]) + " |")
    return "\n".join(lines), rows


def table(rows: list[dict], base: dict) -> str:
    """The rows as markdown, with F1 and speed over `base`'s."""
    head = "| contender | F1 | precision | recall | docs/s | no text | F1, speed vs defaults |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        f1_x, speed_x = r["f1"] / base["f1"], r["docs_per_s"] / base["docs_per_s"]
        vs = "" if r is base else f"{f1_x:.3f}x, {speed_x:.2f}x"
        cells = [r["name"], f"{r['f1']:.3f}", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                 f"{r['docs_per_s']:.1f}", str(r["empty"]), vs]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lost_pages(ours: Sequence[str | None], base: Sequence[str | None]) -> int:
    """Pages where refinery has no text and trafilatura's defaults have some."""
    pairs = zip(ours, base, strict=True)
    return sum(bool(WORD.search(b or "")) and not WORD.search(o or "") for o, b in pairs)


def normalize_figures(pages: list[dict], extracted: list) -> dict:
    """Print and return what normalize does to refinery's text, as a whole and step by step."""
    cfg = NormalizeConfig()
    text_table, text_rows = normalize_table(pages, extracted, normalized(extracted, cfg))
    steps = step_rows(extracted, lambda out: scores(pages, out), cfg)
    print(f"\n{text_table}\n\n{steps_table(steps)}")
    return {"normalize": text_rows, "normalize_steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the benchmark's folder")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes; the fastest counts")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    if not (args.data / "ground-truth.json").exists():
        sys.exit(f"bench/extract.py: {args.data / 'ground-truth.json'} not found (set --data)")
    pages = load_pages(args.data)
    print(f"{len(pages)} pages, {sum(len(p['html']) for p in pages) / 1e6:.1f} MB of HTML, "
          f"trafilatura {trafilatura.__version__}")  # fmt: skip
    base, base_out = run("trafilatura, defaults", trafilatura_defaults, pages, args.repeat)
    with refinery() as (extract, outcomes):
        ours, ours_out = run("refinery", extract, pages, args.repeat)
    options = refinery_options()
    first = run("trafilatura, refinery's first settings", trafilatura_with(options), pages,
                args.repeat)[0]  # fmt: skip
    inside = run("refinery in-process", refinery_in_process, pages, args.repeat)[0]
    rows = [ours, inside, base, first, run("jusText", justext_text, pages, args.repeat)[0]]
    print(table(rows, base))
    print("refinery's first settings: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    counts = Counter(outcomes.values()).most_common()
    print("refinery's pages by the settings that found their text, or why none did: "
          + ", ".join(f"{r} {n}" for r, n in counts))  # fmt: skip
    figures = normalize_figures(pages, ours_out)
    lost = lost_pages(ours_out, base_out)
    print(f"\npages where refinery has no text and trafilatura's defaults have some: {lost}")
    passed = round(ours["f1"], 3) >= GOAL_F1 and lost == 0
    if args.json:
        vs = {"f1": ours["f1"] / base["f1"], "speed": ours["docs_per_s"] / base["docs_per_s"]}
        figures = {"goal_f1": GOAL_F1, "passed": passed, "trafilatura": trafilatura.__version__,
                   "refinery_options": options, "refinery_vs_defaults": vs, "rows": rows,
                   "refinery_outcomes": dict(counts), "lost_pages": lost,
                   **figures}  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nAcceptance: refinery F1 {ours['f1']:.3f} >= {GOAL_F1} (trafilatura's published "
          f"F1) and no page lost against trafilatura's defaults: "
          f"{'PASS' if passed else 'FAIL'}")  # fmt: skip
    if not passed:
        sys.exit(1)


if __name__ == "__main__":
    main()
