"""Quality heuristics: the Gopher quality rules (Rae et al., 2021), script-aware.

In: doc_id, text, lang. Out: adds one `q_*` column per signal, so shards can be re-filtered
without recomputing; documents failing a rule are dropped with a `quality_gopher_*` reason.
Words are whitespace-separated tokens, except in scripts written without spaces (Chinese,
Japanese, Thai, ...) where each character counts as a word and the word-length rule is skipped.
The stop-word rule applies to the languages that have a list in `stop_words`.
"""

import polars as pl
from prefect import task
from pydantic import BaseModel, Field

from shards.schema import LANG, TEXT
from tasks.partition import StageDir, run_partition
from tasks.records import Rule, StageResult, StageStats, apply_rules

STAGE = "quality"

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class QualityConfig(BaseModel, frozen=True, extra="forbid"):
    """Gopher thresholds (the defaults are the paper's, as FineWeb uses them)."""

    enabled: bool = True
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3
    max_mean_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    stop_words: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"en": GOPHER_STOP_WORDS}
    )


WORD_COUNT = "quality_gopher_word_count"
MEAN_WORD_LENGTH = "quality_gopher_mean_word_length"
SYMBOL_RATIO = "quality_gopher_symbol_word_ratio"
BULLET_LINES = "quality_gopher_bullet_lines"
ELLIPSIS_LINES = "quality_gopher_ellipsis_lines"
ALPHA_WORDS = "quality_gopher_alpha_words"
STOP_WORDS = "quality_gopher_stop_words"

# Scripts written without spaces between words (regex class body; MinHash shingles them too).
UNSPACED_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
# A word: a run of non-space characters, or one character (with its marks) of an unspaced script.
_WORD = rf"[[{UNSPACED_SCRIPTS}]&&\P{{M}}]\p{{M}}*|[^\s{UNSPACED_SCRIPTS}]+"
# A word with a letter in it: an unspaced-script letter, or a spaced run holding a letter.
_ALPHA_WORD = (
    rf"[[{UNSPACED_SCRIPTS}]&&\P{{M}}&&\p{{L}}]\p{{M}}*"
    rf"|[^\s{UNSPACED_SCRIPTS}]*[\p{{L}}--[{UNSPACED_SCRIPTS}]][^\s{UNSPACED_SCRIPTS}]*"
)


def quality_signals(df: pl.DataFrame, stop_words: dict[str, tuple[str, ...]]) -> pl.DataFrame:
    """Add the Gopher signals as `q_*` columns (Float32).

    Everything but the stop-word count is a regex count over the text, with no word or line
    lists: every non-space character belongs to exactly one word, so the mean word length is
    non-space characters over words.
    """
    text = pl.col(TEXT)
    n_words = text.str.count_matches(_WORD)
    n_lines = text.str.count_matches(r"(?m)^[^\S\n]*\S").clip(lower_bound=1)
    unspaced = text.str.count_matches(rf"[{UNSPACED_SCRIPTS}]") > 0.3 * text.str.len_chars()
    signals = {
        "q_word_count": n_words,
        "q_mean_word_length": pl.when(unspaced | (n_words == 0))
        .then(None)
        .otherwise((text.str.len_chars() - text.str.count_matches(r"\s")) / n_words),
        "q_symbol_word_ratio": text.str.count_matches(r"#|\.\.\.|…") / n_words.clip(1),
        "q_bullet_lines_ratio": text.str.count_matches(r"(?m)^[^\S\n]*[•‣●▪◦\-\*]") / n_lines,
        "q_ellipsis_lines_ratio": text.str.count_matches(r"(?m)(\.\.\.|…)[^\S\n]*$") / n_lines,
        "q_alpha_words_ratio": text.str.count_matches(_ALPHA_WORD) / n_words.clip(1),
        "q_stop_words": stop_word_counts(df, stop_words),
    }
    return df.with_columns(expr.cast(pl.Float32).alias(name) for name, expr in signals.items())


def stop_word_counts(df: pl.DataFrame, stop_words: dict[str, tuple[str, ...]]) -> pl.Expr:
    """Words in the stop list of the document's language (null without a list)."""
    if LANG not in df.columns or not df[LANG].is_in(list(stop_words)).any():
        return pl.lit(None, pl.Float32)
    words = pl.col(TEXT).str.extract_all(_WORD)
    counts = pl.lit(None, pl.Float32)
    for lang, wordlist in stop_words.items():
        count = words.list.eval(pl.element().str.to_lowercase().is_in(list(wordlist))).list.sum()
        counts = pl.when(pl.col(LANG) == lang).then(count).otherwise(counts)
    return counts


def gopher_rules(cfg: QualityConfig) -> list[Rule]:
    """The removal rules over the `q_*` signals, in order of precedence."""
    q = pl.col
    return [
        Rule(
            WORD_COUNT,
            ~q("q_word_count").is_between(cfg.min_words, cfg.max_words),
            q("q_word_count").cast(pl.String),
        ),
        Rule(
            MEAN_WORD_LENGTH,
            ~q("q_mean_word_length").is_between(cfg.min_mean_word_length, cfg.max_mean_word_length),
            q("q_mean_word_length").round(2).cast(pl.String),
        ),
        Rule(
            SYMBOL_RATIO,
            q("q_symbol_word_ratio") > cfg.max_symbol_word_ratio,
            q("q_symbol_word_ratio").round(3).cast(pl.String),
        ),
        Rule(
            BULLET_LINES,
            q("q_bullet_lines_ratio") > cfg.max_bullet_lines_ratio,
            q("q_bullet_lines_ratio").round(3).cast(pl.String),
        ),
        Rule(
            ELLIPSIS_LINES,
            q("q_ellipsis_lines_ratio") > cfg.max_ellipsis_lines_ratio,
            q("q_ellipsis_lines_ratio").round(3).cast(pl.String),
        ),
        Rule(
            ALPHA_WORDS,
            q("q_alpha_words_ratio") < cfg.min_alpha_words_ratio,
            q("q_alpha_words_ratio").round(3).cast(pl.String),
        ),
        Rule(STOP_WORDS, q("q_stop_words") < cfg.min_stop_words, q("q_stop_words").cast(pl.String)),
    ]


def quality_score(df: pl.DataFrame, cfg: QualityConfig) -> pl.Series:
    """The share of the Gopher rules each document passes, 0 to 1 (Float32).

    Near-duplicate removal keeps the best-scoring document of each cluster with it.
    """
    if LANG not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias(LANG))
    rules = gopher_rules(cfg)
    signals = quality_signals(df, cfg.stop_words)
    failed = signals.select(pl.sum_horizontal(r.when.fill_null(False) for r in rules))
    return (1 - failed.to_series() / len(rules)).cast(pl.Float32).rename("quality_score")


def score_quality(df: pl.DataFrame, cfg: QualityConfig) -> StageResult:
    """Compute the signals and drop the documents that fail a rule."""
    if LANG not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias(LANG))
    return apply_rules(quality_signals(df, cfg.stop_words), STAGE, gopher_rules(cfg))


@task(name="quality")
def quality(part: str, src: StageDir, out: StageDir, cfg: QualityConfig) -> StageStats:
    """Score and filter one partition."""
    return run_partition(src, out, part, lambda df: score_quality(df, cfg))
