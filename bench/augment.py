"""What the augment stage costs per 1,000 source documents on CPU, with tiny random-weight models.

    .venv/bin/python bench/augment.py [--docs 200] [--json PATH]

The sources are English Wikipedia paragraphs (XQuAD, source and licence in bench/data/NOTICE):
the 48 of the bundled sample (tests/data/sample/wiki.jsonl.gz, ids `xquad-en-*`) first, then
the other English ones of bench/data/wiki-paragraphs.jsonl.gz, up to --docs (240 at most).
The models are built in a temporary folder by tests/tiny_seq2seq.py: a Marian pair whose
vocabulary is the sources' words (`build_marian`, en->pivot seed 0 and pivot->en seed 1) for
`backtranslate`, and a ByT5-tokenized T5 (`build_byt5`) for `paraphrase`, prefix
"paraphrase: ". Their weights are random, so they generate until `max_new_tokens` and write
word salad; the figures are the cost of the stage's code path and of generating that many
tokens with models this small, not of real translation models, which are far larger.

Each backend runs with the stage's defaults (`AugmentConfig`) except device cpu, and once more
with max_new_tokens 32: random weights seldom stop before the budget, so the default 256
dominates the figure. The tiny Marian has 64 positions and cannot generate 256 tokens
(transformers raises IndexError), so backtranslate's first run uses 64, its limit. Per run,
timed apart with `time.perf_counter`:

- load: `make_backend` (reading the models from disk);
- generate: `rewrite_batch` over the sources in batches of `batch_docs`, after one untimed
  warm-up document (spaCy's sentencizer, torch's first call);
- vet: `vet_variants` with the default `Vetting` (normalize, the chrF band, language ID,
  quality), as the stage calls it. Variants that leave the chrF band skip language ID and
  quality, which with random weights is nearly all of them, so "vet, band open" times it
  again with the band at [0, 100] and every variant through language ID and quality;
- near-dup: `near_duplicates` of every variant with a word in it against the sources, as if
  they had all passed vetting (an upper bound: the stage checks only the vetted ones).

Total is generate + vet + near-dup, docs/s is sources per second over that total, and "in
band" counts the variants whose chrF against their source is within the default band.

The `llm` backend runs against a local OpenAI-compatible server that this script starts on
127.0.0.1 in a child process: a ThreadingHTTPServer that answers each chat completion at once
with the user message's sentences in reverse order. With concurrency 4 and retries off, its
generate figure is refinery's own side of a request (building it, httpx, JSON, the event
loop per batch) plus the loopback round trip, not the cost of any model.

torch uses as many threads as the process has cores. Take figures on an idle machine.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shards.schema import AUGMENT_METHOD, AUGMENT_MODEL, AUGMENTED_FROM, DOC_ID, LANG, TEXT
from tasks.augment.augment import (
    AugmentConfig,
    Vetting,
    near_duplicates,
    rewrite_batch,
    vet_variants,
)
from tasks.augment.backends import make_backend, sentencizer, split_document
from tasks.augment.metrics import chrf
from tasks.clean.normalize import NormalizeConfig
from tasks.dedup.minhash_dedup import MinhashConfig
from tasks.filter.langid import LangIdConfig
from tasks.filter.quality import QualityConfig
from tests.tiny_seq2seq import build_byt5, build_marian

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "sample" / "wiki.jsonl.gz"
MORE = ROOT / "bench" / "data" / "wiki-paragraphs.jsonl.gz"
SHORT_BUDGET = 32  # the second max_new_tokens of each seq2seq backend
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
PARTS = ("generate", "vet", "near_dup")


def load_docs(n: int) -> pl.DataFrame:
    """`n` English paragraphs (doc_id, text, lang): the sample's first, then bench/data's."""
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if r["id"].startswith("xquad-en")]
    with gzip.open(MORE, "rt", encoding="utf-8") as f:
        seen = {r["id"] for r in rows}
        rows += [r for r in map(json.loads, f) if r["lang"] == "en" and r["id"] not in seen]
    if not 0 < n <= len(rows):
        raise ValueError(f"--docs must be between 1 and {len(rows)}, not {n}")
    return pl.DataFrame({DOC_ID: [r["id"] for r in rows[:n]],
                         TEXT: [r["text"] for r in rows[:n]], LANG: "en"})  # fmt: skip


class ReverseHandler(BaseHTTPRequestHandler):
    """A chat-completions endpoint that answers at once with the user's sentences reversed."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real server offers
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        content = " ".join(reversed(SENTENCE_END.split(text)))
        reply = {"object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content},
             "finish_reason": "stop"}]}  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def reverse_server() -> Iterator[str]:
    """The endpoint URL of a `ReverseHandler` server serving from a child process, so that its
    work does not compete with the client's for the interpreter lock."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReverseHandler)
    child = multiprocessing.get_context("fork").Process(target=server.serve_forever, daemon=True)
    child.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        child.terminate()
        child.join()
        server.server_close()


def build_models(root: Path, texts: list[str]) -> dict[str, Path]:
    """The tiny Marian pair (vocabulary: the sources' words) and the tiny ByT5, on disk."""
    return {
        "model_a": build_marian(root / "opus-tiny-en-pivot", texts, seed=0),
        "model_b": build_marian(root / "opus-tiny-pivot-en", texts, seed=1),
        "model": build_byt5(root / "byt5-tiny"),
    }


def positions(model: Path) -> int:
    """How many positions a saved transformers model has."""
    return json.loads((model / "config.json").read_text())["max_position_embeddings"]


def configs(models: dict[str, Path], endpoint: str) -> list[tuple[AugmentConfig, str]]:
    """The runs: each backend with the stage's defaults (device cpu), the seq2seq ones once
    more with a short budget; with a note where a default could not be kept."""
    default = AugmentConfig().max_new_tokens
    marian = min(default, positions(models["model_a"]), positions(models["model_b"]))
    capped = ""
    if marian < default:
        capped = f"the tiny Marian has {marian} positions and fails past them, so not {default}"
    bt = {"backend": "backtranslate", "model_a": str(models["model_a"]),
          "model_b": str(models["model_b"])}  # fmt: skip
    para = {"backend": "paraphrase", "model": str(models["model"]), "prefix": "paraphrase: "}
    llm = {"backend": "llm", "endpoint": endpoint, "llm_model": "reverse-sentences",
           "retries": 0, "api_key_env": "REFINERY_BENCH_AUGMENT_KEY"}  # fmt: skip
    short = {"max_new_tokens": SHORT_BUDGET}
    runs = [({**bt, "max_new_tokens": marian}, capped), ({**bt, **short}, ""),
            (para, ""), ({**para, **short}, ""), (llm, "")]  # fmt: skip
    return [(AugmentConfig(enabled=True, device="cpu", **kw), note) for kw, note in runs]


def generate(docs: pl.DataFrame, cfg: AugmentConfig) -> tuple[pl.DataFrame, float, float]:
    """The variants of every source, the seconds `make_backend` took and those of generation."""
    start = time.perf_counter()
    backend = make_backend(cfg)
    load_s = time.perf_counter() - start
    rewrite_batch(docs.head(1), backend, cfg)  # warm-up, untimed
    start = time.perf_counter()
    batches = [rewrite_batch(docs.slice(i, cfg.batch_docs), backend, cfg)
               for i in range(0, docs.height, cfg.batch_docs)]  # fmt: skip
    return pl.concat(batches), load_s, time.perf_counter() - start


def as_new_documents(variants: pl.DataFrame) -> pl.DataFrame:
    """The variants with a word in them as `near_duplicates` takes new documents (doc_id,
    augmented_from, text), with the ids the stage gives them."""
    doc_id = pl.format("{}~{}{}", AUGMENTED_FROM, AUGMENT_METHOD, "variant").alias(DOC_ID)
    new = variants.filter(pl.col(TEXT).str.contains(r"\w"))
    return new.select(doc_id, AUGMENTED_FROM, TEXT)


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """What `fn(*args)` returns and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def warm_up_vetting(docs: pl.DataFrame, vet: Vetting) -> None:
    """Vet a few sources as their own variants, so that no run pays for first imports and
    model loads alone."""
    head = docs.head(4)
    copies = head.select(pl.col(DOC_ID).alias(AUGMENTED_FROM), TEXT, variant=pl.lit(0),
                         augment_method=pl.lit("copy"), augment_model=pl.lit("none"),
                         error=pl.lit(None, pl.String))  # fmt: skip
    everything = AugmentConfig(min_chrf=0.0, max_chrf=100.0)
    vet_variants(head, copies, everything, vet)


def run(docs: pl.DataFrame, cfg: AugmentConfig, note: str, vet: Vetting) -> dict:
    """One backend's row: seconds of each part, per 1,000 sources, and what the variants were."""
    variants, load_s, gen_s = generate(docs, cfg)
    vetted, vet_s = timed(vet_variants, docs, variants, cfg, vet)
    band_open = cfg.model_copy(update={"min_chrf": 0.0, "max_chrf": 100.0})
    opened, vet_open_s = timed(vet_variants, docs, variants, band_open, vet)
    new = as_new_documents(variants)
    _, dup_s = timed(near_duplicates, docs.select(DOC_ID, TEXT), new, vet.minhash)
    sources = dict(zip(docs[DOC_ID], docs[TEXT], strict=True))
    texts = [t or "" for t in variants[TEXT]]
    scores = chrf(texts, [sources[s] for s in variants[AUGMENTED_FROM]])
    in_band = sum(cfg.min_chrf <= s <= cfg.max_chrf for s in scores)
    seconds = {"generate": gen_s, "vet": vet_s, "vet_band_open": vet_open_s, "near_dup": dup_s}
    total = sum(seconds[p] for p in PARTS)
    per_1k = {p: s * 1000 / docs.height for p, s in {**seconds, "total": total}.items()}
    return {"backend": cfg.backend, "model": variants[AUGMENT_MODEL][0],
            "max_new_tokens": None if cfg.backend == "llm" else cfg.max_new_tokens, "note": note,
            "load_s": load_s, "seconds": seconds, "s_per_1k_docs": per_1k,
            "docs_per_s": docs.height / total, "variants": variants.height,
            "wordless_variants": variants.height - new.height, "in_band": in_band,
            "mean_chrf": statistics.mean(scores), "kept_after_vetting": vetted.kept.height,
            "kept_band_open": opened.kept.height,
            "removed": dict(Counter(vetted.removed["reason"].to_list()).most_common())}  # fmt: skip


def table(rows: list[dict]) -> str:
    """The rows as markdown: seconds per 1,000 source documents, and what passed."""
    head = ("| backend | max_new_tokens | load s | generate | vet | vet, band open | near-dup "
            "| total | docs/s | in chrF band | kept after vetting |")  # fmt: skip
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        k = r["s_per_1k_docs"]
        budget = "-" if r["max_new_tokens"] is None else str(r["max_new_tokens"])
        cells = [r["backend"], budget, f"{r['load_s']:.2f}", f"{k['generate']:.1f}",
                 f"{k['vet']:.1f}", f"{k['vet_band_open']:.1f}", f"{k['near_dup']:.2f}",
                 f"{k['total']:.1f}", f"{r['docs_per_s']:.1f}",
                 f"{r['in_band']} / {r['variants']}",
                 f"{r['kept_after_vetting']} / {r['variants']}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: list[dict]) -> str:
    """What the table's figures are, and what vetting removed in each run."""
    lines = [
        "",
        "Models: random weights (tests/tiny_seq2seq.py), which generate until max_new_tokens: "
        "the stage's default is 256, the rows at 32 are the short budget.",
    ]
    lines += [f"{r['backend']} at {r['max_new_tokens']}: {r['note']}." for r in rows if r["note"]]
    lines += [
        "vet: as the stage runs it, where a variant outside the chrF band skips language ID "
        "and quality; vet, band open: the band at [0, 100], every variant through both.",
        "near-dup: every variant with a word in it against the sources, as if all had passed "
        "vetting.",
        "llm: a local server in a child process that answers at once, concurrency 4, "
        "retries off: refinery's client-side overhead only (plus the loopback round trip), "
        "not the cost of any model.",
        "",
    ]
    for r in rows:
        budget = f" at {r['max_new_tokens']}" if r["max_new_tokens"] else ""
        removed = ", ".join(f"{reason} {n}" for reason, n in r["removed"].items())
        lines.append(f"{r['backend']}{budget}: mean chrF {r['mean_chrf']:.1f}, "
                     f"{r['wordless_variants']} of {r['variants']} variants without a word; "
                     f"vetting removed {removed}")  # fmt: skip
    return "\n".join(lines)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200, help="source documents (240 at most)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    threads = cores()
    torch.set_num_threads(threads)
    try:
        docs = load_docs(args.docs)
    except ValueError as e:
        sys.exit(f"bench/augment.py: {e}")
    nlp = sentencizer("en")
    sentences = statistics.mean(len(split_document(t, nlp)[0]) for t in docs[TEXT])
    vet = Vetting(NormalizeConfig(), LangIdConfig(), QualityConfig(), MinhashConfig())
    warm_up_vetting(docs, vet)
    with tempfile.TemporaryDirectory() as tmp, reverse_server() as endpoint:
        models = build_models(Path(tmp), docs[TEXT].to_list())
        rows = [run(docs, cfg, note, vet) for cfg, note in configs(models, endpoint)]
    chars = docs[TEXT].str.len_chars().mean()
    print(f"{docs.height} English Wikipedia paragraphs, {sentences:.1f} sentences and "
          f"{chars:.0f} characters per document. CPU, torch {torch.__version__} with "
          f"{threads} threads, one per core. Seconds per 1,000 source documents, "
          "1 variant each.\n")  # fmt: skip
    print(table(rows))
    print(notes(rows))
    if args.json:
        figures = {"docs": docs.height, "sentences_per_doc": sentences, "torch_threads": threads,
                   "torch": torch.__version__, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
