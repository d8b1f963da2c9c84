"""Every quality signal of the Gopher, Gopher repetition, C4 and FineWeb rules, per document.

In: text, lang, script. Out: one row per document with the `q_*` columns of
`shards.schema.QUALITY_SIGNALS` (Float32); `q_model` is added by the quality stage. Words and
sentences come from `tasks.filter.quality_units`; line and paragraph signals are polars expressions
over the text. A signal does not depend on any threshold, so shards can be re-filtered with
new thresholds without computing them again.

Lines are split at newlines; paragraphs at blank lines. C4 keeps the text whole: its sentence
count covers the lines C4 would keep (three words or more, no word over 1,000 characters, no
"javascript", no cookie or terms-of-use notice). A short line (FineWeb) has at most 30
characters, or 10 in a script written without spaces.
"""

import functools
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from shards.schema import LANG, SCRIPT, TEXT
from tasks.filter.quality_units import WORD, is_unspaced, sentence_end_class, words

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = tuple(range(5, 11))
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
          "use cookies")  # fmt: skip
SHORT_LINE = 30
SHORT_LINE_UNSPACED = 10
LONG_WORD = 1000
BULLETS = r"•‣●▪◦\-\*"
_CLOSERS = r"\"'”’»)\]」』）】〉》"  # may follow the punctuation that ends a sentence
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling n-gram hash
_SALT = np.uint64(0xC2B2AE3D27D4EB4F)  # spreads document numbers over the hash
BAD_WORDS_DIR = Path(__file__).parents[1] / "resources" / "badwords"


def line_signals(df: pl.DataFrame) -> pl.DataFrame:
    """Per document (`doc`): the Gopher, C4 and FineWeb signals of its lines and paragraphs."""
    text, unspaced = pl.col(TEXT), pl.col("unspaced")
    lines = (
        df.select("doc", "unspaced", line=text.str.split("\n"))
        .explode("line")
        .with_columns(i=pl.int_range(pl.len(), dtype=pl.UInt32).over("doc"))
        .with_columns(s=pl.col("line").str.strip_chars())
        .with_columns(lower=pl.col("s").str.to_lowercase())
    )
    s, lower = pl.col("s"), pl.col("lower")
    filled = lines.filter(s != "")
    dup = pl.struct("doc", "s").is_first_distinct().not_()
    short = s.str.len_chars() <= pl.when(unspaced).then(SHORT_LINE_UNSPACED).otherwise(SHORT_LINE)
    c4_rejects = (
        (s.str.count_matches(WORD) < 3)
        | s.str.contains(rf"\S{{{LONG_WORD + 1},}}")
        | lower.str.contains("javascript", literal=True)
        | lower.str.contains_any(list(POLICY))
    )
    per_line = (
        filled.with_columns(dup=dup, short=short, c4_kept=~c4_rejects)
        .group_by("doc")
        .agg(
            n=pl.len(),
            dup_lines=pl.col("dup").sum(),
            dup_line_chars=s.str.len_chars().filter(pl.col("dup")).sum(),
            punct_lines=s.str.contains(f"[{sentence_end_class()}][{_CLOSERS}]*$").sum(),
            short_lines=pl.col("short").sum(),
            js=lower.str.contains("javascript", literal=True).sum(),
            policy=lower.str.contains_any(list(POLICY)).sum(),
            c4_lines=pl.struct("i", "c4_kept"),
        )
    )
    all_lines = lines.group_by("doc").agg(
        n_all=pl.len(),
        bullets=pl.col("line").str.strip_chars_start().str.contains(f"^[{BULLETS}]").sum(),
        ellipsis=s.str.contains(r"(\.\.\.|…)$").sum(),
    )
    return all_lines.join(per_line, on="doc", how="left")


def paragraph_signals(df: pl.DataFrame) -> pl.DataFrame:
    """Per document: duplicate paragraphs (split at blank lines) and their characters."""
    paras = (
        df.select("doc", p=pl.col(TEXT).str.strip_chars().str.split("\n\n"))
        .explode("p")
        .with_columns(pl.col("p").str.strip_chars("\n"))
        .filter(pl.col("p") != "")
    )
    dup = pl.struct("doc", "p").is_first_distinct().not_()
    return (
        paras.with_columns(dup=dup)
        .group_by("doc")
        .agg(
            paras=pl.len(),
            dup_paras=pl.col("dup").sum(),
            dup_para_chars=pl.col("p").str.len_chars().filter(pl.col("dup")).sum(),
        )
    )


def ngram_signals(w: pl.DataFrame, n_docs: int) -> dict[str, np.ndarray]:
    """Characters in the most frequent 2-4-gram and in repeated 5-10-grams, per document.

    N-grams are rolling hashes over the word hashes, salted with the document; a word is in
    a repeated n-gram when an n-gram covering it occurred before in the document (overlaps
    counted once). Characters include one separator per word outside scripts written
    without spaces. An n-gram can only recur where its first n - 1 words recur, so each
    size only looks at the places where the size before it recurred.
    """
    doc, h = w["doc"].to_numpy(), w["h"].to_numpy()
    size = w["len"].to_numpy().astype(np.int64) + ~w["unspaced"].to_numpy()
    total = np.r_[0, np.cumsum(size)]
    out: dict[str, np.ndarray] = {}
    at = np.arange(len(h))  # where the n-gram may recur
    gram = h ^ (doc.astype(np.uint64) * _SALT)
    power = np.ones(1, np.uint64)
    for n in range(2, max(DUP_NGRAMS) + 1):
        power = power * _P
        inside = at + n - 1 < len(h)
        inside[inside] = doc[at[inside] + n - 1] == doc[at[inside]]
        at, gram = at[inside], gram[inside] + h[at[inside] + n - 1] * power
        recurs = pl.Series(gram).is_duplicated().to_numpy()
        at, gram = at[recurs], gram[recurs]
        if n in TOP_NGRAMS:
            out[str(n)] = np.maximum(longest_ngram(doc, total, n, n_docs),
                                     top_recurring(doc, total, at, gram, n, n_docs))  # fmt: skip
        else:
            first = pl.Series(gram).is_first_distinct().to_numpy()
            starts = np.zeros(len(h) + 1, np.int64)
            starts[at[~first] + 1] = 1
            c = np.cumsum(starts)  # c[j + 1]: repeated n-grams starting at or before j
            j = np.arange(len(h))
            covered = c[j + 1] - c[np.maximum(j - n + 1, 0)] > 0
            out[str(n)] = np.bincount(doc, weights=size * covered, minlength=n_docs)
    return out


def longest_ngram(doc: np.ndarray, total: np.ndarray, n: int, n_docs: int) -> np.ndarray:
    """Per document, the characters of its longest n-gram (an n-gram seen once)."""
    i = np.arange(max(len(doc) - n + 1, 0))
    length = np.where(doc[i + n - 1] == doc[i], total[i + n] - total[i], 0)
    best = np.zeros(n_docs)
    if len(i):
        starts = np.flatnonzero(np.r_[True, doc[i][1:] != doc[i][:-1]])  # words are by doc
        best[doc[i][starts]] = np.maximum.reduceat(length, starts)
    return best


def top_recurring(doc, total, at, gram, n: int, n_docs: int) -> np.ndarray:
    """Per document, count times characters of its most frequent recurring n-gram."""
    groups = (
        pl.DataFrame({"g": gram, "doc": doc[at], "len": total[at + n] - total[at]})
        .group_by("g")
        .agg(pl.col("doc").first(), c=pl.len() * pl.col("len").first())
        .group_by("doc")
        .agg(pl.col("c").max())
    )
    return _scatter(groups["doc"].to_numpy(), groups["c"].to_numpy(), n_docs)


def _scatter(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[index] = values
    return out


@functools.cache
def bad_words_pattern(lang: str, ignore: tuple[str, ...]) -> str | None:
    """A regex for the LDNOOBW list of `lang` (word-bounded unless written without spaces)."""
    path = BAD_WORDS_DIR / f"{lang}.txt"
    if not path.is_file():
        return None
    entries = {e.strip().lower() for e in path.read_text().splitlines()} - {"", *ignore}
    alternation = "|".join(sorted(map(_escape, entries), key=len, reverse=True))
    if lang in ("zh", "ja", "th"):
        return f"(?:{alternation})"
    return rf"(?:^|\W)(?:{alternation})(?:\W|$)"


def _escape(word: str) -> str:
    return "".join(f"\\{c}" if c in string.punctuation else c for c in word)


def bad_word_counts(df: pl.DataFrame, ignore: tuple[str, ...]) -> pl.Series:
    """LDNOOBW words in each document of a language with a list (null otherwise)."""
    counts = pl.Series("bad", [None] * df.height, pl.Float32)
    for lang in df[LANG].drop_nulls().unique().to_list():
        pattern = bad_words_pattern(lang, ignore)
        if pattern is None:
            continue
        rows = (df[LANG] == lang).fill_null(False).arg_true()
        found = df[TEXT].gather(rows).str.to_lowercase().str.count_matches(pattern)
        counts = counts.scatter(rows, found.cast(pl.Float32))
    return counts


def compute_signals(
    df: pl.DataFrame, stop_words: Callable[[str | None], frozenset[str]], ignore: tuple[str, ...]
) -> pl.DataFrame:
    """Every `q_*` signal (but `q_model`) of each document of `df` (text, lang, script)."""
    missing = pl.Series([None] * df.height, dtype=pl.String)
    lang = df[LANG] if LANG in df.columns else missing
    script = df[SCRIPT] if SCRIPT in df.columns else missing
    base = pl.DataFrame({TEXT: df[TEXT], LANG: lang, SCRIPT: script}).with_row_index("doc")
    base = base.with_columns(unspaced=is_unspaced(pl.col(LANG), pl.col(SCRIPT)))
    w = words(base, base[LANG], base["unspaced"], stop_words)
    per_doc = (
        base.select("doc", "unspaced", chars=pl.col(TEXT).str.len_chars(), text=pl.col(TEXT))
        .join(word_counts(w), on="doc", how="left")
        .join(line_signals(base), on="doc", how="left")
        .join(paragraph_signals(base), on="doc", how="left")
        .join(c4_sentences(w), on="doc", how="left")
        .sort("doc")
    )
    grams = ngram_signals(w, df.height)
    return assemble(per_doc, grams, bad_word_counts(base, ignore))


def word_counts(w: pl.DataFrame) -> pl.DataFrame:
    """Per document: words, words with a letter or beyond punctuation, their characters,
    stop words."""
    plain = ~pl.col("symbol")
    return w.group_by("doc").agg(
        words=pl.len(),
        plain=plain.sum(),
        plain_chars=pl.col("len").filter(plain).sum(),
        alpha=pl.col("alpha").sum(),
        stop=pl.col("stop").sum(),
    )


def c4_sentences(w: pl.DataFrame) -> pl.DataFrame:
    """Per document and line: sentence starts (joined to the lines C4 keeps later)."""
    per_line = w.group_by("doc", "line").agg(sents=pl.col("sent").sum())
    return per_line.group_by("doc").agg(pl.struct("line", "sents").alias("line_sents"))


def assemble(d: pl.DataFrame, grams: dict[str, np.ndarray], bad: pl.Series) -> pl.DataFrame:
    """The `q_*` columns from the per-document counts."""
    c = pl.col
    chars = c("chars").clip(1)
    words_ = c("words").fill_null(0)
    sents = kept_sentences(d)
    signals = {
        "q_gopher_words": c("plain").fill_null(0),
        "q_gopher_mean_word_length": pl.when(c("unspaced") | (c("plain").fill_null(0) == 0))
        .then(None)
        .otherwise(c("plain_chars") / c("plain")),
        "q_gopher_symbol_word_ratio": pl.max_horizontal(
            c("text").str.count_matches("#", literal=True),
            c("text").str.count_matches(r"\.\.\.|…"),
        )
        / words_.clip(1),
        "q_gopher_bullet_lines_ratio": c("bullets") / c("n_all").clip(1),
        "q_gopher_ellipsis_lines_ratio": c("ellipsis") / c("n_all").clip(1),
        "q_gopher_alpha_words_ratio": c("alpha").fill_null(0) / words_.clip(1),
        "q_gopher_stop_words": c("stop").fill_null(0),
        "q_gopher_dup_para_ratio": c("dup_paras").fill_null(0) / c("paras").fill_null(1).clip(1),
        "q_gopher_dup_para_char_ratio": c("dup_para_chars").fill_null(0) / chars,
        "q_gopher_dup_line_ratio": c("dup_lines").fill_null(0) / c("n").fill_null(1).clip(1),
        "q_gopher_dup_line_char_ratio": c("dup_line_chars").fill_null(0) / chars,
        **{
            f"q_gopher_top_{n}gram_char_ratio": pl.lit(pl.Series(grams[str(n)])) / chars
            for n in TOP_NGRAMS
        },
        **{
            f"q_gopher_dup_{n}gram_char_ratio": pl.lit(pl.Series(grams[str(n)])) / chars
            for n in DUP_NGRAMS
        },
        "q_c4_lorem_ipsum": c("text").str.to_lowercase().str.count_matches("lorem ipsum"),
        "q_c4_curly_bracket": c("text").str.count_matches("{", literal=True),
        "q_c4_sentences": sents,
        "q_c4_bad_words": pl.lit(bad),
        "q_c4_javascript_lines": c("js").fill_null(0),
        "q_c4_policy_lines": c("policy").fill_null(0),
        "q_fineweb_line_punct_ratio": c("punct_lines").fill_null(0) / c("n").fill_null(1).clip(1),
        "q_fineweb_short_line_ratio": c("short_lines").fill_null(0) / c("n").fill_null(1).clip(1),
        "q_fineweb_char_dup_ratio": c("dup_line_chars").fill_null(0)
        / (c("chars") - c("text").str.count_matches("\n", literal=True)).clip(1),
        "q_fineweb_list_ratio": c("text").str.count_matches("\n", literal=True) / words_.clip(1),
    }
    return d.select(expr.cast(pl.Float32).alias(name) for name, expr in signals.items())


def kept_sentences(d: pl.DataFrame) -> pl.Expr:
    """Sentences in the lines C4 keeps, per document."""
    lines = (
        d.select("doc", "c4_lines")
        .explode("c4_lines")
        .unnest("c4_lines")
        .filter(pl.col("c4_kept"))
        .join(
            d.select("doc", "line_sents").explode("line_sents").unnest("line_sents"),
            left_on=["doc", "i"],
            right_on=["doc", "line"],
        )
        .group_by("doc")
        .agg(pl.col("sents").sum())
    )
    counts = _scatter(lines["doc"].to_numpy(), lines["sents"].to_numpy(), d.height)
    return pl.lit(pl.Series(counts))
