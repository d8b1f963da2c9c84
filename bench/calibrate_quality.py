"""Per-language quality thresholds by quantile matching on Wikipedia paragraphs.

A rule's English threshold drops some share p of English Wikipedia paragraphs; a language's
threshold is the value that drops the same share of its own Wikipedia paragraphs (the
method FineWeb-2 uses to carry English thresholds to other languages). Only the rules whose
signal is counted in different units in scripts written without spaces (words, sentences,
n-grams of characters) are carried over; the rest keep their English value. Last, the
sentence minimum, the rule most tied to a paragraph's length, is set so that the language's
reference paragraphs pass all the rules at the rate the English ones do.

    python bench/calibrate_quality.py [--data bench/data] [--write]

prints the overrides as YAML and, with --write, stores them in
tasks/resources/quality_languages.yaml, the default of `quality.languages`.
"""

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.filter.quality import QualityConfig, add_signals, checks, filter_quality  # noqa: E402

# Reference paragraphs: English XQuAD ones; for zh their XQuAD translations (the same content,
# so the same share should pass); for ja, with no translation of them, every JSQuAD one.
SOURCES = {"en": "xquad", "zh": "xquad", "ja": ""}
LANGUAGES = ("zh", "ja")
# Rules whose signal is counted per character in unspaced scripts: reason -> config key.
CARRIED = {
    "c4_too_few_sentences": "c4.min_sentences",
    "gopher_short_doc": "gopher.min_words",
    **{f"gopher_top_{n}gram": f"gopher_repetition.max_top_ngram_char_ratio.{n}"
       for n in (2, 3, 4)},
    **{f"gopher_dup_{n}gram": f"gopher_repetition.max_dup_ngram_char_ratio.{n}"
       for n in range(5, 11)},
}  # fmt: skip
MIN_SHARE = 0.02  # a tail thinner than this is too noisy to match on a thousand paragraphs
# Thai marks no sentence ends: its rules on sentences and line punctuation are off.
MANUAL = {"th": {"c4": {"min_sentences": None}, "fineweb": {"min_line_punct_ratio": None}}}
OUT = ROOT / "tasks" / "resources" / "quality_languages.yaml"


def paragraphs(data: Path) -> pl.DataFrame:
    path = data / "wiki-paragraphs.jsonl.gz"
    if not path.is_file():
        raise SystemExit(f"calibrate_quality: no paragraphs at {path} (see --data)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    frame = pl.DataFrame(rows).select(pl.col("id").alias("doc_id"), "text", "lang", "source")
    wanted = pl.lit(False)
    for lang, source in SOURCES.items():
        wanted = wanted | (pl.col("lang") == lang) & pl.col("source").str.contains(source)
    return frame.filter(wanted)


def matched(en: np.ndarray, other: np.ndarray, op: str, threshold: float) -> float:
    """The threshold that fails the same share of `other` as `threshold` fails of `en`
    (for a count, the whole number that comes closest)."""
    share = np.mean(en < threshold) if op == "<" else np.mean(en > threshold)
    share = max(share, MIN_SHARE)
    if op == "<" and float(threshold).is_integer():
        candidates = np.arange(0, int(other.max()) + 2)
        return float(candidates[np.abs([np.mean(other < c) - share for c in candidates]).argmin()])
    q = share if op == "<" else 1 - share
    value = float(np.quantile(other, q, method="lower" if op == "<" else "higher"))
    return value if op == "<" else max(value, threshold)


def calibrate(signals: pl.DataFrame) -> dict[str, dict]:
    """The overrides of each language in `LANGUAGES`."""
    rules = {reason: (signal, op, t) for reason, signal, op, t in checks(QualityConfig())}
    en = signals.filter(pl.col("lang") == "en")
    out: dict[str, dict] = {}
    for lang in LANGUAGES:
        other = signals.filter(pl.col("lang") == lang)
        tree: dict = {}
        for reason, key in CARRIED.items():
            signal, op, threshold = rules[reason]
            value = matched(en[signal].to_numpy(), other[signal].to_numpy(), op, threshold)
            counted = signal in ("q_c4_sentences", "q_gopher_words")
            *path, leaf = key.split(".")
            node = tree
            for part in path:
                node = node.setdefault(part, {})
            value = round(value) if counted else round(value, 3)
            node[int(leaf) if leaf.isdigit() else leaf] = value
        monotone(tree["gopher_repetition"]["max_dup_ngram_char_ratio"])
        tree["c4"]["min_sentences"] = same_pass_rate(en, other, lang, tree)
        out[lang] = tree
    return out | MANUAL


def pass_rate(signals: pl.DataFrame, cfg: QualityConfig) -> float:
    return filter_quality(signals, cfg).kept.height / max(signals.height, 1)


def same_pass_rate(en: pl.DataFrame, other: pl.DataFrame, lang: str, tree: dict) -> int:
    """The sentence minimum (the rule that depends most on a paragraph's length) with which
    the language's paragraphs pass all rules at the rate English ones do."""
    target = pass_rate(en, QualityConfig(languages={}))
    best, best_gap = 1, 2.0
    for n in range(1, 11):
        override = {**tree, "c4": {**tree["c4"], "min_sentences": n}}
        gap = abs(pass_rate(other, QualityConfig(languages={lang: override})) - target)
        if gap < best_gap:
            best, best_gap = n, gap
    return best


def monotone(thresholds: dict[int, float]) -> None:
    """Longer repeated n-grams never get a looser bound than shorter ones."""
    bound = 0.0
    for n in sorted(thresholds, reverse=True):
        bound = thresholds[n] = max(thresholds[n], bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / "data")
    parser.add_argument("--write", action="store_true", help=f"store them in {OUT.name}")
    args = parser.parse_args()
    docs = paragraphs(args.data)
    signals = add_signals(docs, QualityConfig(languages={}))
    overrides = calibrate(signals)
    text = yaml.safe_dump(overrides, sort_keys=True, allow_unicode=True)
    print(text)
    if args.write:
        header = (
            "# Quality thresholds of languages written without spaces, carried over from the\n"
            "# English ones by quantile matching on Wikipedia paragraphs\n"
            "# (bench/calibrate_quality.py --write regenerates this file).\n"
        )
        OUT.write_text(header + text)


if __name__ == "__main__":
    main()
