"""refinery's side of bench/filters.py: raw fastText, refinery's language ID, and language ID
followed by every quality signal, timed with bench/filters_harness.py. Prints and writes one
JSON row.

    .venv/bin/python bench/filters_refinery.py --contender full --workers 2 \\
        --docs-file data/bench/filters/docs-4000-seed0.jsonl --json data/bench/filters/full.json

- raw: lid.176 (`load_model(None)`, the fastText model itself) called as a user would call it:
  `model.predict(texts, k=1)` on whole documents, newlines replaced by spaces. Kept: labelled en.
- langid: `detect_language` with the default `LangIdConfig`, which drops nothing. Kept:
  labelled en.
- full: `detect_language` keeping English scored at least 0.65 (the settings datatrove's
  `LanguageFilter` runs with in FineWeb), then `score_quality` with the default
  `QualityConfig` on the rows it kept. Kept: what both keep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from filters_harness import add_run_flags, read_texts, time_workers

from tasks.filter.langid import LangIdConfig, detect_language, load_model
from tasks.filter.quality import QualityConfig, score_quality


def frame(texts: list[str]) -> pl.DataFrame:
    """A batch as refinery's stages take it: doc_id, text."""
    df = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    return df.select(doc_id=pl.int_range(pl.len()).cast(pl.String), text="text")


def setup_raw():
    return load_model(None)


def raw_english(model, texts: list[str]) -> int:
    labels, _ = model.predict([t.replace("\n", " ") for t in texts], k=1)
    return sum(label[0] == "__label__en" for label in labels)


def setup_langid():
    return load_model(None), LangIdConfig()


def langid_english(state, texts: list[str]) -> int:
    model, cfg = state
    return detect_language(frame(texts), cfg, model).kept.filter(pl.col("lang") == "en").height


def setup_full():
    return load_model(None), LangIdConfig(allow=("en",), min_score=0.65), QualityConfig()


def full_kept(state, texts: list[str]) -> int:
    model, langid_cfg, quality_cfg = state
    english = detect_language(frame(texts), langid_cfg, model).kept
    return score_quality(english, quality_cfg).kept.height


CONTENDERS = {
    "raw": ("raw fastText", "lid.176 `model.predict` on whole documents", setup_raw, raw_english),
    "langid": ("refinery langid", "`detect_language`", setup_langid, langid_english),
    "full": ("refinery langid + quality", "`detect_language` + `score_quality`", setup_full,
             full_kept),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contender", choices=sorted(CONTENDERS), required=True)
    add_run_flags(parser)
    args = parser.parse_args()
    name, what, setup, process = CONTENDERS[args.contender]
    timing = time_workers(read_texts(args.docs_file), args.workers, setup, process,
                          args.batch_size, args.repeat)  # fmt: skip
    row = {"name": name, "what": what, **timing}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
