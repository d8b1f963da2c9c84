"""Build the labelled texts of bench/langid_accuracy.py and bench/calibrate_quality.py.

Usage:
    python bench/data/make_langid_data.py --shared /path/to/shared/data [--out bench/data]

Writes wiki-paragraphs.jsonl.gz (the Wikipedia paragraphs in 14 language groups:
id, lang, source, parallel_group, text) and udhr.jsonl.gz (every version of the Universal
Declaration of Human Rights: code, bcp47, iso6393, stage, text). Texts are taken unchanged;
sources and licences are in bench/data/NOTICE. The outputs are committed, so a clone does
not need the source data; running the script twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

SOURCES = {
    "wiki-paragraphs.jsonl.gz": (
        "multilingual-wiki-paragraphs/paragraphs.jsonl",
        ("id", "lang", "source", "parallel_group", "text"),
    ),
    "udhr.jsonl.gz": (
        "udhr-multilingual/udhr.jsonl",
        ("code", "bcp47", "iso6393", "stage", "text"),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the source data sets")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    for name, (source, fields) in SOURCES.items():
        with (args.shared / source).open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        lines = "".join(
            json.dumps({k: r[k] for k in fields}, ensure_ascii=False) + "\n" for r in rows
        )
        (args.out / name).write_bytes(gzip.compress(lines.encode(), mtime=0))
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
