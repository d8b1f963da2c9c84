"""Quality: every Gopher, Gopher repetition, C4 and FineWeb signal, then the rules over them.

In: doc_id, text, lang, script. Out: adds one `q_*` column per signal (see
`tasks.filter.quality_signals`), and `q_model` when a fastText quality classifier is configured;
documents failing a rule are dropped with the rule's reason (`gopher_short_doc`,
`c4_lorem_ipsum`, `fineweb_line_punct_ratio`, ...). The defaults are the thresholds of the
FineWeb recipe; `languages` overrides them per language. Signals are computed once and kept
(`signals` in the work directory), so `refinery refilter` applies new thresholds without
computing anything again.
"""

import functools
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from prefect import task
from pydantic import BaseModel, Field, field_validator, model_validator

from shards.schema import LANG, QUALITY_SIGNALS, TEXT
from shards.workdir import StageDir
from tasks.filter.quality_signals import DUP_NGRAMS, TOP_NGRAMS, compute_signals
from tasks.filter.quality_units import spacy_stop_words
from tasks.partition import run_partitions
from tasks.records import Rule, StageResult, StageStats, apply_rules, empty_ledger

STAGE = "quality"

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherConfig(BaseModel, frozen=True, extra="forbid"):
    """Gopher quality rules (Rae et al., 2021); None turns a rule off."""

    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3
    max_mean_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2


class RepetitionConfig(BaseModel, frozen=True, extra="forbid"):
    """Gopher repetition rules: shares of duplicated lines, paragraphs and n-grams."""

    max_dup_para_ratio: float | None = 0.3
    max_dup_para_char_ratio: float | None = 0.2
    max_dup_line_ratio: float | None = 0.3
    max_dup_line_char_ratio: float | None = 0.2
    max_top_ngram_char_ratio: dict[int, float] = {2: 0.2, 3: 0.18, 4: 0.16}
    max_dup_ngram_char_ratio: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11,
                                                  10: 0.10}  # fmt: skip


class C4Config(BaseModel, frozen=True, extra="forbid"):
    """C4 rules (Raffel et al., 2020). Bad words are counted always; `max_bad_words: 0`
    drops any document with one, as C4 did (FineWeb does not use the list)."""

    lorem_ipsum: bool = True
    curly_bracket: bool = True
    min_sentences: int | None = 5
    max_bad_words: int | None = None


class FineWebConfig(BaseModel, frozen=True, extra="forbid"):
    """FineWeb rules (Penedo et al., 2024): dropped at or beyond each bound."""

    min_line_punct_ratio: float | None = 0.12  # dropped when the share is at most this
    max_short_line_ratio: float | None = 0.67  # dropped at this share or above
    max_char_dup_ratio: float | None = 0.01  # dropped at this share or above
    max_list_ratio: float | None = 0.3  # newlines per word; dropped above


class Thresholds(BaseModel, frozen=True, extra="forbid"):
    """Every rule's thresholds (a language's overrides have the same shape)."""

    gopher: GopherConfig = GopherConfig()
    gopher_repetition: RepetitionConfig = RepetitionConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()
    min_model_score: float | None = Field(None, ge=0, le=1)


@functools.cache
def language_defaults() -> dict[str, dict[str, Any]]:
    """Shipped overrides for languages written without spaces, whose words are characters:
    carried over from the English thresholds by quantile matching on Wikipedia paragraphs
    (bench/calibrate_quality.py)."""
    return yaml.safe_load(LANGUAGES_FILE.read_text())


LANGUAGES_FILE = Path(__file__).parents[1] / "resources" / "quality_languages.yaml"


def deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        key = int(key) if isinstance(key, str) and key.isdigit() else key  # n-gram sizes
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_merge(out[key], value) if both else value
    return out


class QualityConfig(Thresholds, frozen=True, extra="forbid"):
    """Thresholds, per-language overrides, and what the signals are computed with."""

    enabled: bool = True
    languages: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: language_defaults(),
        description="per language, overrides of the thresholds: {zh: {c4: {min_sentences: 3}}}",
    )
    stop_words: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"en": GOPHER_STOP_WORDS},
        description="stop lists by language; others use spaCy's",
    )
    bad_words_ignore: tuple[str, ...] = Field(
        ("sm", "グロ", "女の子", "性"), description="list entries that are ordinary words"
    )
    model: str | None = Field(None, description="fastText quality classifier (train-quality)")

    @field_validator("languages", mode="before")
    @classmethod
    def _onto_shipped(cls, value: Any) -> Any:
        """A user's overrides go onto the shipped ones, key by key (`--set
        quality.languages.ja.c4.min_sentences=2` keeps ja's other shipped overrides)."""
        return deep_merge(language_defaults(), value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check_languages(self) -> "QualityConfig":
        for lang in self.languages:
            self.thresholds(lang)
        return self

    def thresholds(self, lang: str | None) -> Thresholds:
        """The thresholds for documents in `lang`, overrides applied."""
        base = Thresholds.model_validate(self.model_dump(include=set(Thresholds.model_fields)))
        override = self.languages.get(lang or "")
        if not override:
            return base
        return Thresholds.model_validate(deep_merge(base.model_dump(), override))

    def signal_key(self) -> dict[str, Any]:
        """What the signals depend on (the thresholds do not change them)."""
        return self.model_dump(mode="json", include={"stop_words", "bad_words_ignore", "model"})


# Reasons, in order of precedence.
DUP_PARA = "gopher_dup_para_ratio"
DUP_PARA_CHARS = "gopher_dup_para_char_ratio"
DUP_LINE = "gopher_dup_line_ratio"
DUP_LINE_CHARS = "gopher_dup_line_char_ratio"
SHORT_DOC = "gopher_short_doc"
LONG_DOC = "gopher_long_doc"
SHORT_WORDS = "gopher_below_avg_word_length"
LONG_WORDS = "gopher_above_avg_word_length"
SYMBOLS = "gopher_symbol_word_ratio"
BULLETS = "gopher_bullet_lines"
ELLIPSIS = "gopher_ellipsis_lines"
ALPHA = "gopher_below_alpha_words"
STOP_WORDS = "gopher_few_stop_words"
LOREM_IPSUM = "c4_lorem_ipsum"
CURLY_BRACKET = "c4_curly_bracket"
FEW_SENTENCES = "c4_too_few_sentences"
BAD_WORDS = "c4_bad_words"
LINE_PUNCT = "fineweb_line_punct_ratio"
SHORT_LINES = "fineweb_short_line_ratio"
CHAR_DUP = "fineweb_char_dup_ratio"
LIST_RATIO = "fineweb_list_ratio"
MODEL_SCORE = "quality_model_low_score"


def top_ngram(n: int) -> str:
    return f"gopher_top_{n}gram"


def dup_ngram(n: int) -> str:
    return f"gopher_dup_{n}gram"


def checks(t: Thresholds) -> list[tuple[str, str, str, float | None]]:
    """(reason, signal, comparison that drops, threshold) for every rule, in order of
    precedence: length and explicit markers (lorem ipsum, code, bad words) first, as the
    plainest explanation of a drop, then repetition, the other Gopher rules, C4's sentences,
    FineWeb's line rules and the model."""
    g, r, c, f = t.gopher, t.gopher_repetition, t.c4, t.fineweb
    return [
        (SHORT_DOC, "q_gopher_words", "<", g.min_words),
        (LONG_DOC, "q_gopher_words", ">", g.max_words),
        (LOREM_IPSUM, "q_c4_lorem_ipsum", ">", 0 if c.lorem_ipsum else None),
        (CURLY_BRACKET, "q_c4_curly_bracket", ">", 0 if c.curly_bracket else None),
        (BAD_WORDS, "q_c4_bad_words", ">", c.max_bad_words),
        (DUP_PARA, "q_gopher_dup_para_ratio", ">", r.max_dup_para_ratio),
        (DUP_PARA_CHARS, "q_gopher_dup_para_char_ratio", ">", r.max_dup_para_char_ratio),
        (DUP_LINE, "q_gopher_dup_line_ratio", ">", r.max_dup_line_ratio),
        (DUP_LINE_CHARS, "q_gopher_dup_line_char_ratio", ">", r.max_dup_line_char_ratio),
        *[(top_ngram(n), f"q_gopher_top_{n}gram_char_ratio", ">",
           r.max_top_ngram_char_ratio.get(n)) for n in TOP_NGRAMS],
        *[(dup_ngram(n), f"q_gopher_dup_{n}gram_char_ratio", ">",
           r.max_dup_ngram_char_ratio.get(n)) for n in DUP_NGRAMS],
        (SHORT_WORDS, "q_gopher_mean_word_length", "<", g.min_mean_word_length),
        (LONG_WORDS, "q_gopher_mean_word_length", ">", g.max_mean_word_length),
        (SYMBOLS, "q_gopher_symbol_word_ratio", ">", g.max_symbol_word_ratio),
        (BULLETS, "q_gopher_bullet_lines_ratio", ">", g.max_bullet_lines_ratio),
        (ELLIPSIS, "q_gopher_ellipsis_lines_ratio", ">", g.max_ellipsis_lines_ratio),
        (ALPHA, "q_gopher_alpha_words_ratio", "<", g.min_alpha_words_ratio),
        (STOP_WORDS, "q_gopher_stop_words", "<", g.min_stop_words),
        (FEW_SENTENCES, "q_c4_sentences", "<", c.min_sentences),
        (LINE_PUNCT, "q_fineweb_line_punct_ratio", "<=", f.min_line_punct_ratio),
        (SHORT_LINES, "q_fineweb_short_line_ratio", ">=", f.max_short_line_ratio),
        (CHAR_DUP, "q_fineweb_char_dup_ratio", ">=", f.max_char_dup_ratio),
        (LIST_RATIO, "q_fineweb_list_ratio", ">", f.max_list_ratio),
        (MODEL_SCORE, "q_model", "<", t.min_model_score),
    ]  # fmt: skip


_COMPARE = {"<": "lt", ">": "gt", "<=": "le", ">=": "ge"}


def _fails(signal: str, op: str, threshold: float | None) -> pl.Expr:
    if threshold is None:
        return pl.lit(False)
    return getattr(pl.col(signal), _COMPARE[op])(threshold).fill_null(False)


def rules(cfg: QualityConfig, langs: list[str]) -> list[Rule]:
    """The removal rules over the `q_*` signals, each with the thresholds of the document's
    language (`langs`: the languages with overrides present in the batch)."""
    default = checks(cfg.thresholds(None))
    per_lang = {lang: checks(cfg.thresholds(lang)) for lang in langs}
    out = []
    for i, (reason, signal, op, threshold) in enumerate(default):
        fails, limit = _fails(signal, op, threshold), pl.lit(threshold, pl.Float64)
        for lang, lang_checks in per_lang.items():
            here = pl.col(LANG) == lang
            fails = pl.when(here).then(_fails(*lang_checks[i][1:])).otherwise(fails)
            limit = pl.when(here).then(pl.lit(lang_checks[i][3], pl.Float64)).otherwise(limit)
        out.append(
            Rule(reason, fails, pl.format("{} {} {}", pl.col(signal).round(4), pl.lit(op), limit))
        )
    failed = pl.concat_list([pl.when(r.when).then(pl.lit(r.reason)) for r in out])
    also = failed.list.drop_nulls().list.join(", ")
    return [Rule(r.reason, r.when, pl.format("{}; fails {}", r.detail, also)) for r in out]


def filter_quality(df: pl.DataFrame, cfg: QualityConfig) -> StageResult:
    """Drop the documents of `df` (with their signals) that fail a rule."""
    langs = [x for x in cfg.languages if LANG in df.columns and (df[LANG] == x).any()]
    if LANG not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias(LANG))
    return apply_rules(df, STAGE, rules(cfg, langs))


def stop_words_of(cfg: QualityConfig, lang: str | None) -> frozenset[str]:
    """The stop list of `lang`: the config's, else spaCy's."""
    if lang in cfg.stop_words:
        return frozenset(cfg.stop_words[lang])
    return spacy_stop_words(lang) if lang else frozenset()


def add_signals(df: pl.DataFrame, cfg: QualityConfig) -> pl.DataFrame:
    """`df` with every `q_*` column (`q_model` null without a model)."""
    signals = compute_signals(df, partial(stop_words_of, cfg), cfg.bad_words_ignore)
    if cfg.model:
        from tasks.filter.quality_model import load_quality_model, model_scores

        q_model = model_scores(df[TEXT], load_quality_model(cfg.model))
    else:
        q_model = pl.Series("q_model", [None] * df.height, pl.Float32)
    return pl.concat([df, signals.with_columns(q_model.alias("q_model"))], how="horizontal")


def signals_only(df: pl.DataFrame, cfg: QualityConfig) -> StageResult:
    """`df` with every signal, nothing removed: the signals kept for `refinery refilter`."""
    return StageResult(add_signals(df, cfg), empty_ledger())


def score_quality(df: pl.DataFrame, cfg: QualityConfig) -> StageResult:
    """Compute the signals and drop the documents that fail a rule."""
    return filter_quality(add_signals(df, cfg), cfg)


def quality_score(df: pl.DataFrame) -> pl.Series:
    """The share of the default rules each document passes, 0 to 1 (Float32).

    Near-duplicate removal keeps the best-scoring document of each cluster with it; it uses
    the default thresholds, so changing them (`refinery refilter`) leaves dedup as it was.
    """
    cfg = QualityConfig()
    scored = all(name in df.columns for name in QUALITY_SIGNALS)  # after the quality stage
    signals = df if scored else add_signals(df, cfg)
    found = [r.when for r in rules(cfg, [])]
    failed = signals.select(pl.sum_horizontal(found)).to_series()
    return (1 - failed / len(found)).cast(pl.Float32).rename("quality_score")


@task(name="quality")
def quality(
    parts: list[str], src: StageDir, signals: StageDir, out: StageDir, cfg: QualityConfig
) -> StageStats:
    """Score partitions of `src` (those whose signals an earlier run kept are not scored
    again) and filter them."""
    run_partitions(src, signals, parts, partial(signals_only, cfg=cfg))
    return run_partitions(signals, out, parts, partial(filter_quality, cfg=cfg))
