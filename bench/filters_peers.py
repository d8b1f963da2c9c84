"""datatrove's side of bench/filters.py: language ID and quality filters, timed with
bench/filters_harness.py. Runs under the bench virtualenv (.venv-bench); prints and writes one
JSON row.

    .venv-bench/bin/python bench/filters_peers.py --model PATH/TO/lid.176.ftz --workers 2 \\
        --docs-file data/bench/filters/docs-4000-seed0.jsonl --json data/bench/filters/dt.json

datatrove 0.10.1's `LanguageFilter(languages=["en"])` (threshold 0.65), `GopherQualityFilter()`
and `C4QualityFilter()` with their defaults, chained through their `run` methods as a pipeline
task chains them (each document goes on only if the step before kept it, and every step keeps
its stats), over `Document`s made from the texts, with no reader, writer or executor around
them. Each worker does this over its share of the documents, as `LocalPipelineExecutor` with
tasks=workers=W would, less its file reading and logging: the comparison leans datatrove's way.

Nothing is downloaded. `LanguageFilter` would fetch lid.176.bin: it is pointed at --model, the
lid.176.ftz that refinery uses (the same model, quantised), which datatrove copies into its
asset cache (HF_ASSETS_CACHE, by default beside --json) as it would a download. datatrove
splits English words and sentences with spaCy's rule-based blank "en" pipeline, which ships
inside the spacy package (bench/requirements-bench.txt); NLTK, whose punkt data would need a
download, is not used for English.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from filters_harness import add_run_flags, read_texts, time_workers


def setup_datatrove(model: str):
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, LanguageFilter

    language = LanguageFilter(languages=["en"], language_threshold=0.65)
    # GlotLID sets MODEL_URL on the instance too; a local path is copied instead of fetched.
    language.model.MODEL_URL = model
    return [language, GopherQualityFilter(), C4QualityFilter()]


def datatrove_kept(steps, texts: list[str]) -> int:
    from datatrove.data import Document

    docs = iter([Document(text=t, id=str(i)) for i, t in enumerate(texts)])
    for step in steps:
        docs = step.run(docs)
    return sum(1 for _ in docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the lid.176 fastText file")
    add_run_flags(parser)
    args = parser.parse_args()
    if not args.model.exists():
        sys.exit(f"bench/filters_peers.py: no model at {args.model}")
    # Read by huggingface_hub on import, so set before the workers start.
    os.environ.setdefault("HF_ASSETS_CACHE", str(args.json.resolve().parent / "hf-assets"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setup = functools.partial(setup_datatrove, str(args.model.resolve()))
    timing = time_workers(read_texts(args.docs_file), args.workers, setup, datatrove_kept,
                          args.batch_size, args.repeat)  # fmt: skip
    what = "`LanguageFilter` + `GopherQualityFilter` + `C4QualityFilter`"
    row = {"name": f"datatrove {version('datatrove')}", "what": what, **timing}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
