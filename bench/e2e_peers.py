"""datatrove's side of bench/e2e.py: the FineWeb pipeline on WARC files, run under .venv-bench.

    .venv-bench/bin/python bench/e2e_peers.py --input WARC_DIR --output DIR --workers 2 \\
        --model PATH/TO/lid.176.ftz --json OUT.json

The pipeline of datatrove's examples/fineweb.py, with `LocalPipelineExecutor`s in place of
Slurm ones, run one after the other in this process:

1. filtering, tasks=W, workers=W: `WarcReader` -> `URLFilter` -> `Trafilatura(favour_precision=
   True)` -> `LanguageFilter` -> `GopherRepetitionFilter` -> `GopherQualityFilter` ->
   `C4QualityFilter(filter_no_terminal_punct=False)` -> `FineWebQualityFilter` -> `JsonlWriter`;
2. `MinhashDedupSignature` (tasks=W, workers=W) with fineweb.py's `MinhashConfig`: 64-bit
   hashes (xxhash, 0.10.1's default function), 14 buckets of 8 hashes, word 5-grams;
3. `MinhashDedupBuckets`, tasks=14 (it needs a multiple of the bucket count), workers=W;
4. `MinhashDedupCluster`, tasks=1;
5. `MinhashDedupFilter` -> `JsonlWriter` (tasks=W, workers=W), over the output of step 1.

Where it departs from fineweb.py: `LanguageFilter(languages=None)` keeps every language whose
top score passes its default threshold (0.65), since refinery keeps every language (fineweb.py
keeps English only); no exclusion writers (fineweb.py writes every removed document to
disk; refinery's ledger does the same, so this leans datatrove's way); no `TokensCounter`
(it would fetch the GPT-2 tokenizer). Nothing is downloaded: `LanguageFilter` is pointed at
--model, the lid.176.ftz refinery uses (fineweb.py's is lid.176.bin, the same model unquantised),
copied into the asset cache (HF_ASSETS_CACHE) as a download would be; `URLFilter` unpacks the
block lists its package ships and uses tldextract's bundled suffix list; English words and
sentences are split with spaCy's blank "en" pipeline, which ships in the spacy package.

The JSON holds the kept documents (rows of the final output), the near-duplicates the MinHash
filter dropped, the pages that hit `Trafilatura`'s timeout (1 s of wall time a page, by
default: more of them on a busy machine), each step's seconds and every step's counters.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path


def filtering(warcs: Path, out: Path, model: str) -> list:
    """Step 1's pipeline: read, URL filter, extract, language ID, quality filters, write."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from tldextract import TLDExtract

    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=())  # the bundled snapshot, offline
    language = LanguageFilter(languages=None)
    language.model.MODEL_URL = model  # a local path is copied instead of fetched
    return [
        WarcReader(str(warcs), glob_pattern="*.warc.gz"),
        url_filter,
        Trafilatura(favour_precision=True),
        language,
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        JsonlWriter(str(out / "filtered")),
    ]


def executors(warcs: Path, out: Path, model: str, workers: int) -> list[tuple[str, object]]:
    """The five steps as (name, `LocalPipelineExecutor`), in the order they run."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup import MinhashDedupSignature as Signature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8,
                           hash_config=HashConfig(precision=64))  # fmt: skip
    mh = out / "minhash"
    steps = {
        "filtering": ([*filtering(warcs, out, model)], workers),
        "signatures": ([JsonlReader(str(out / "filtered")),
                        Signature(str(mh / "signatures"), config=config)], workers),
        "buckets": ([MinhashDedupBuckets(str(mh / "signatures"), str(mh / "buckets"),
                                         config=config)], config.num_buckets),
        "cluster": ([MinhashDedupCluster(str(mh / "buckets"), str(mh / "remove_ids"),
                                         config=config)], 1),
        "filter": ([JsonlReader(str(out / "filtered")),
                    MinhashDedupFilter(str(mh / "remove_ids")),
                    JsonlWriter(str(out / "deduped"))], workers),
    }  # fmt: skip
    return [
        (name, LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks),
                                     logging_dir=str(out / "logs" / name)))
        for name, (pipeline, tasks) in steps.items()
    ]  # fmt: skip


def counters(stats) -> list[dict]:
    """Each block's name and counters (`total`, `forwarded`, `dropped`, reasons), in order."""
    if stats is None:
        return []
    return [{"name": s.name, **{k: v.total for k, v in s.stats.items()}} for s in stats.stats]


def count_rows(folder: Path) -> int:
    """Documents in the gzipped jsonl files under `folder`."""
    rows = 0
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rb") as f:
            rows += sum(1 for _ in f)
    return rows


def run(warcs: Path, out: Path, model: str, workers: int) -> dict:
    """Run the five steps; kept rows, near-duplicates dropped, seconds and counters."""
    seconds, stats = {}, {}
    for name, executor in executors(warcs, out, model, workers):
        start = time.perf_counter()
        stats[name] = counters(executor.run())
        seconds[name] = round(time.perf_counter() - start, 3)
    near = sum(c.get("dropped", 0) for c in stats["filter"] if "stage 4" in c["name"])
    late = sum(c.get("timeout", 0) for c in stats["filtering"] if "Trafilatura" in c["name"])
    kept, filtered = count_rows(out / "deduped"), count_rows(out / "filtered")
    return {"kept": kept, "near_dups": int(near), "extract_timeouts": int(late),
            "filtered": filtered, "seconds": seconds, "stats": stats}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="folder of .warc.gz files")
    parser.add_argument("--output", type=Path, required=True, help="a fresh folder")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", type=Path, required=True, help="the lid.176 fastText file")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    # Read by huggingface_hub on import, so set before datatrove is imported.
    os.environ.setdefault("HF_ASSETS_CACHE", str(args.output.resolve() / "hf-assets"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from importlib.metadata import version

    row = {"name": f"datatrove {version('datatrove')}", "workers": args.workers,
           **run(args.input.resolve(), args.output.resolve(), str(args.model.resolve()),
                 args.workers)}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
