"""Language ID accuracy: refinery's `detect_language` against the raw lid.176 model, per group.

    .venv/bin/python bench/langid_accuracy.py [--data bench/data] [--seed 0]

Both label the same texts with the same model (lid.176.ftz, `load_model(None)`): refinery
through `detect_language` with the default `LangIdConfig`, and the raw model through
`model.predict(text, k=1)` on the whole text with only its newlines replaced by spaces, as a
user calling fastText directly would. A prediction is right when it is the expected label, or
the macrolanguage of a member the data names (Serbo-Croatian `hbs`, lid.176's `sh`, for hr,
bs and sr). Both sides are compared in refinery's codes (`tasks.filter.langid.language_of`).

Texts, from --data (bench/data, sources and licences in bench/data/NOTICE):
- multilingual-wiki-paragraphs: Wikipedia paragraphs, one group per language; zh comes
  twice, translated (XQuAD) and native (CMRC 2018); ja is native (JSQuAD).
- udhr-multilingual: the UDHR versions in a language lid.176 has a label for, grouped by the
  script most of their letters are in, each scored whole and as 3 excerpts of 200 characters
  that start at a random line (fixed seed), since short texts are where language ID struggles.
  Fragments (stage < 4) under 1,000 characters are left out. A version's label is the first
  of: `UDHR_LABELS` below (by ISO 639-3 code), its BCP 47 primary subtag, its ISO 639-3 code,
  that is one of lid.176's labels (`model.get_labels()`). The primary subtag is where most
  macrolanguages resolve: cmn -> zh, arb -> ar, pes and prs -> fa, lvs -> lv, ekk -> et,
  swh -> sw, khk -> mn, uzn -> uz, azj -> az, npi -> ne, ydd -> yi, pbu -> ps, plt -> mg,
  gug -> gn, kmr -> ku, quz -> qu. Versions written in a script the language's Wikipedia
  rarely uses (Vietnamese in Chữ Nôm, Sanskrit in Grantha, ...) are kept: both contenders
  see them, and they show up in the table of the 10 worst languages.

Prints one markdown table per data set and the worst 10 UDHR languages. Acceptance: refinery
is at least as accurate as the raw model on every group; the script exits 1 if it is not.
"""

from __future__ import annotations

import argparse
import random
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.filter.langid import LangIdConfig, detect_language, language_of, load_model

DEFAULT_DATA = Path(__file__).resolve().parent / "data"
PARAGRAPHS = "wiki-paragraphs.jsonl.gz"
UDHR = "udhr.jsonl.gz"
MIN_FRAGMENT_CHARS = 1000
EXCERPTS, EXCERPT_CHARS = 3, 200
PARAGRAPH_SOURCES = {"xquad": "", "cmrc2018_dev": " (native)", "jsquad_v1.3_valid": " (native)"}

# lid.176 labels of UDHR languages (by ISO 639-3 code) that neither their BCP 47 primary
# subtag nor their ISO 639-3 code gives right.
UDHR_LABELS = {
    "als": "sq",  # Tosk Albanian: lid.176's "als" is Wikipedia's code for Alemannic
    "gsw": "als",  # Alemannic, under that Wikipedia code
    "rgn": "eml",  # Romagnol: lid.176 has Emilian-Romagnol
    "bho": "bh",  # Bhojpuri and Magahi: the Bihari collective (Maithili has its own label)
    "mag": "bh",
    "nhn": "nah",  # Central Nahuatl: the Nahuatl collective
    "quy": "qu",  # Southern Quechua, the Quechua of Wikipedia's "qu"
    "quh": "qu",
    "zlm": "ms",  # Malay
    "nob": "no",  # Norwegian Bokmål (Nynorsk is "nn")
    "cnr": "sh",  # Montenegrin: Serbo-Croatian
}
MACROLANGUAGE = {"hr": "hbs", "bs": "hbs", "sr": "hbs"}  # Serbo-Croatian, lid.176's "sh"
SCRIPT_GROUPS = {"LATIN": "Latin", "CYRILLIC": "Cyrillic", "ARABIC": "Arabic", "CJK": "Han, kana",
                 "HIRAGANA": "Han, kana", "KATAKANA": "Han, kana", "HANGUL": "Hangul"}  # fmt: skip
BRAHMIC = {"DEVANAGARI", "BENGALI", "GURMUKHI", "GUJARATI", "ORIYA", "TAMIL", "TELUGU", "KANNADA",
           "MALAYALAM", "SINHALA", "THAI", "LAO", "TIBETAN", "MYANMAR", "KHMER", "JAVANESE",
           "BALINESE", "GRANTHA", "CHAKMA", "TAI"}  # fmt: skip


def paragraph_rows(path: Path) -> pl.DataFrame:
    """Wikipedia paragraphs as group, label, text."""
    df = pl.read_ndjson(path)
    suffix = pl.col("source").replace_strict(PARAGRAPH_SOURCES, default=" (other)")
    group = pl.concat_str(pl.lit("wiki "), pl.col("lang"), suffix)
    return df.select(set=pl.lit("wiki"), group=group, label="lang", text="text")


def udhr_label(row: dict, labels: set[str]) -> str | None:
    """lid.176's label for a UDHR version's language, or None if it has none."""
    if row["iso6393"] in UDHR_LABELS:
        return UDHR_LABELS[row["iso6393"]]
    primary = (row["bcp47"] or "").split("-")[0]
    return next((code for code in (primary, row["iso6393"]) if code in labels), None)


def main_script(text: str) -> str:
    """The script group of most of the first 2,000 letters."""
    names = Counter(unicodedata.name(c, "?").split(" ")[0] for c in text[:2000] if c.isalpha())
    name = names.most_common(1)[0][0] if names else "?"
    return SCRIPT_GROUPS.get(name) or ("Brahmic" if name in BRAHMIC else "other scripts")


def excerpts(text: str, rng: random.Random) -> list[str]:
    """Up to `EXCERPTS` distinct excerpts of `EXCERPT_CHARS` characters starting at lines."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    starts = [s for s in starts if s + EXCERPT_CHARS <= len(text)]
    picks = rng.sample(starts, min(EXCERPTS, len(starts)))
    return [text[s : s + EXCERPT_CHARS] for s in sorted(picks)]


def udhr_rows(path: Path, labels: set[str], seed: int) -> tuple[pl.DataFrame, str]:
    """UDHR versions lid.176 knows, whole and as excerpts; and a line saying what was left out."""
    versions = pl.read_ndjson(path).to_dicts()
    rows, unknown, fragments = [], 0, 0
    for v in versions:
        label = udhr_label(v, labels)
        if label is None:
            unknown += 1
            continue
        if v["stage"] < 4 and len(v["text"]) < MIN_FRAGMENT_CHARS:
            fragments += 1
            continue
        script = main_script(v["text"])
        rows.append(("UDHR whole", f"UDHR whole, {script}", label, v["text"]))
        for part in excerpts(v["text"], random.Random(f"{seed}:{v['code']}")):
            rows.append(("UDHR 200 chars", f"UDHR 200 chars, {script}", label, part))
    n = len(versions) - unknown - fragments
    n_langs = len({row[2] for row in rows})
    note = (f"UDHR: {n} of {len(versions)} versions, in {n_langs} lid.176 languages; left out "
            f"{unknown} in other languages and {fragments} short fragments")  # fmt: skip
    schema = ["set", "group", "label", "text"]
    return pl.DataFrame(rows, schema=schema, orient="row"), note


def predict(texts: pl.DataFrame, model) -> pl.DataFrame:
    """Add `refinery` and `raw`: each contender's label (null where refinery removed a row)."""
    df = texts.with_row_index("doc_id").with_columns(pl.col("doc_id").cast(pl.String))
    kept = detect_language(df.select("doc_id", "text"), LangIdConfig(), model).kept
    raw, _ = model.predict([t.replace("\n", " ") for t in df["text"]], k=1)
    raw = pl.Series("raw", [language_of(labels[0]) for labels in raw])
    # Both sides in refinery's codes (lid.176's "als" and "sh" are "gsw" and "hbs" there).
    label = pl.col("label").map_elements(lambda x: language_of(f"__label__{x}"), pl.String)
    return df.with_columns(raw, label.alias("label")).join(
        kept.select("doc_id", refinery="lang"), on="doc_id", how="left", maintain_order="left"
    )


def correct(column: str) -> pl.Expr:
    """Whether a contender's label is the expected one or its macrolanguage."""
    macro = pl.col("label").replace_strict(MACROLANGUAGE, default=None)
    return ((pl.col(column) == pl.col("label")) | (pl.col(column) == macro)).fill_null(False)


def accuracy(df: pl.DataFrame, by: str, **more: pl.Expr) -> pl.DataFrame:
    """n, right answers and accuracy of both contenders (and `more`) per value of `by`."""
    return (
        df.group_by(by, maintain_order=True)
        .agg(n=pl.len(), ok_refinery=correct("refinery").sum(), ok_raw=correct("raw").sum(), **more)
        .with_columns(
            refinery=pl.col("ok_refinery") / pl.col("n"), raw=pl.col("ok_raw") / pl.col("n")
        )
    )


def table(stats: pl.DataFrame, key: str) -> str:
    """Accuracy rows as markdown; a row where refinery is behind is marked."""
    said = "said" in stats.columns  # the raw model's most frequent label
    head = f"| {key} | n | refinery | raw fastText | difference |" + (" raw says |" if said else "")
    lines = [head, "|---|---:|---:|---:|---:|" + ("---|" if said else "")]
    for r in stats.iter_rows(named=True):
        mark = " **behind**" if r["ok_refinery"] < r["ok_raw"] else ""
        diff = 100 * (r["refinery"] - r["raw"])
        lines.append(f"| {r[key]} | {r['n']:,} | {100 * r['refinery']:.1f} % | "
                     f"{100 * r['raw']:.1f} % | {diff:+.1f}{mark} |"
                     + (f" {r['said']} |" if said else ""))  # fmt: skip
    return "\n".join(lines)


def report(scored: pl.DataFrame) -> bool:
    """Print the tables; return whether refinery is at least as accurate on every group."""
    groups = accuracy(scored.sort("set", "group", maintain_order=True), "group")
    for name in ("wiki", "UDHR whole", "UDHR 200 chars"):
        rows = scored.filter(set=name)
        stats = pl.concat(
            [
                accuracy(rows, "group").sort("group"),
                accuracy(rows.with_columns(group=pl.lit(f"{name}, all")), "group"),
            ]
        )
        print(f"\n{name}\n\n" + table(stats, "group"))
    print("\n" + table(accuracy(scored.with_columns(group=pl.lit("all texts")), "group"), "group"))
    udhr = scored.filter(pl.col("set") != "wiki")
    worst = accuracy(udhr.sort("label"), "label", said=pl.col("raw").mode().sort().first())
    order = [pl.min_horizontal("refinery", "raw"), -pl.col("n").cast(pl.Int64), "label"]
    worst = worst.sort(order).head(10)
    print("\nUDHR, the 10 worst languages, whole and excerpts\n\n" + table(worst, "label"))
    behind = groups.filter(pl.col("ok_refinery") < pl.col("ok_raw"))["group"].to_list()
    print("\nAcceptance: refinery at least as accurate as raw fastText on every group: "
          + ("PASS" if not behind else f"FAIL on {'; '.join(behind)}"))  # fmt: skip
    return not behind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the texts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the UDHR excerpts")
    args = parser.parse_args()
    missing = [p for p in (PARAGRAPHS, UDHR) if not (args.data / p).exists()]
    if missing:
        sys.exit(f"bench/langid_accuracy.py: {args.data / missing[0]} not found (set --data)")
    model = load_model(None)
    labels = {label.removeprefix("__label__") for label in model.get_labels()}
    udhr, note = udhr_rows(args.data / UDHR, labels, args.seed)
    texts = pl.concat([paragraph_rows(args.data / PARAGRAPHS), udhr])
    print(f"{note}\n{texts.height:,} texts in all")
    if not report(predict(texts, model)):
        sys.exit(1)


if __name__ == "__main__":
    main()
