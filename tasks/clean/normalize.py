"""Normalize: decode, repair and tidy text, then replace PII.

In: doc_id, text, raw (bytes when the record was not valid UTF-8). Out: the same rows with a
clean `text` (no `raw`) and `pii_replaced` (UInt32). In order: bytes decoded (by their byte
order mark, else with the fallback encodings), mojibake repaired with ftfy, Unicode NFC,
control characters removed, runs of spaces folded, blank lines collapsed; undecodable and
empty records quarantined; then, in the kept rows, e-mail addresses, phone numbers, IP
addresses (and names, with `pii.ner_model`) replaced by mask tags (`tasks.clean.pii`), counted in
`pii_replaced`. PII comes last so that cleaning never touches a mask tag (quarantined rows
have no text left to replace).

ftfy repairs what is broken (mojibake, HTML entities, C1 controls, surrogates, Latin
ligatures such as "ﬁ") but, by default, leaves what is only a style as it is written: curly
quotes stay curly (ftfy's `uncurl_quotes` would write "don't" for "don’t"), and full-width
forms stay full-width (its `fix_character_width` would write Chinese "，" and "（）" as ASCII
"," and "()"). `bench/extract.py` measures each of these steps.

With `enabled: false` the text is only decoded and checked, not changed: no PII is replaced
either. With `pii.enabled: false` the text is cleaned but its PII left. Either way every kept
row has `pii_replaced`, 0.
"""

import codecs
from typing import Any

import ftfy
import polars as pl
from prefect import task
from pydantic import BaseModel, Field

from shards.schema import TEXT
from tasks.clean.pii import PiiConfig, load_ner, replace_pii
from tasks.partition import StageDir, run_partitions
from tasks.records import QUARANTINED, Rule, StageResult, StageStats, apply_rules

STAGE = "normalize"


class NormalizeConfig(BaseModel, frozen=True, extra="forbid"):
    """Text clean-up switches."""

    enabled: bool = True
    fix_mojibake: bool = Field(True, description="repair encoding errors with ftfy")
    # ftfy's style changes, off by default: they change text that is not broken.
    uncurl_quotes: bool = Field(False, description="with ftfy: curly quotes to straight ones")
    fix_character_width: bool = Field(
        False, description="with ftfy: full-width forms to ASCII (，to ,), half-width kana to full"
    )
    fix_latin_ligatures: bool = Field(True, description="with ftfy: ﬁ to fi, ĳ to ij")
    fold_whitespace: bool = Field(
        True, description="runs of spaces to one, three or more line breaks to a blank line"
    )
    fallback_encodings: tuple[str, ...] = ("cp1252",)
    pii: PiiConfig = PiiConfig()


UNDECODABLE = "normalize_undecodable"
EMPTY = "normalize_empty"

# C0/C1 control characters except tab and newline, plus zero-width and BOM characters.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\ufeff]"
# The same but C1 (\x80-\x9f): ftfy reads those as the bytes of mojibake ("â€\x9d" is ”).
_CONTROL_BUT_C1 = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\ufeff]"
_TERMINAL_ESCAPE = r"\x1b\[[0-9;]*[A-Za-z]"  # colours and cursor moves, as ftfy removes them


# Byte order marks, UTF-32 first (its little-endian mark starts with UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode(raw: bytes | None, encodings: tuple[str, ...]) -> str | None:
    """Decode bytes with the encoding their byte order mark names (UTF-16 or UTF-32), else
    with the first fallback encoding that fits them; None if none does. Without the mark
    check, cp1252 would read UTF-16 as Latin letters and NULs."""
    if raw is None:
        return None
    marked = [encoding for bom, encoding in _BOMS if raw.startswith(bom)][:1]
    for encoding in (*marked, *encodings):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def clean(texts: pl.Expr, controls: str = _CONTROL, fold: bool = True) -> pl.Expr:
    """Polars expression: terminal escapes and `controls` removed (first, so that NFC joins
    what they kept apart), then NFC and line ends; with `fold`, spaces and blank lines tidied."""
    out = (
        texts.str.replace_all(_TERMINAL_ESCAPE, "")
        .str.replace_all(controls, "")
        .str.normalize("NFC")
        .str.replace_all(r"\r\n?", "\n")
    )
    if fold:
        out = (
            out.str.replace_all(r"[^\S\n]+", " ")
            .str.replace_all(r" ?\n ?", "\n")
            .str.replace_all(r"\n{3,}", "\n\n")
        )
    return out.str.strip_chars()


def fixer(cfg: NormalizeConfig) -> ftfy.TextFixerConfig:
    """ftfy's settings: every repair, and the style changes `cfg` turns on."""
    return ftfy.TextFixerConfig(
        uncurl_quotes=cfg.uncurl_quotes,
        fix_character_width=cfg.fix_character_width,
        fix_latin_ligatures=cfg.fix_latin_ligatures,
        explain=False,  # the list of steps taken, which nothing reads
    )


_REPAIR_ROUNDS = 4


def repair(
    texts: pl.Series, config: ftfy.TextFixerConfig | None = None, fold: bool = True
) -> pl.Series:
    """`texts` tidied, with mojibake repaired by ftfy (with `config`, else ftfy's defaults),
    so that a second pass changes nothing.

    ftfy sees the text tidied but for C1 controls, which it reads as the bytes of mojibake.
    Where removing what ftfy left (a stray C1 control, a zero-width space) changes the text,
    that may uncover mojibake the removed character hid ("\\x8dÂ\\x95" leaves "Â•", which is
    "•"), so those rows are repaired again, up to `_REPAIR_ROUNDS` times in all.
    """
    out = _clean_series(texts, _CONTROL_BUT_C1, fold)
    rows = pl.Series(range(len(texts)), dtype=pl.UInt32)
    for _ in range(_REPAIR_ROUNDS):
        # ftfy (which also applies NFC) is per string by nature: the one per-row step.
        fixed = out.gather(rows).map_elements(
            lambda text: ftfy.fix_text(text, config), return_dtype=pl.String, skip_nulls=True
        )
        cleaned = _clean_series(fixed, fold=fold)
        out = out.scatter(rows, cleaned)
        rows = rows.filter((cleaned != fixed).fill_null(False))
        if rows.is_empty():
            break
    return out


def _clean_series(texts: pl.Series, controls: str = _CONTROL, fold: bool = True) -> pl.Series:
    return pl.select(clean(pl.lit(texts), controls, fold)).to_series().alias(texts.name)


def pii_config(cfg: NormalizeConfig) -> PiiConfig:
    """The PII step's config: off when normalize is off, which changes no text."""
    return cfg.pii if cfg.enabled else cfg.pii.model_copy(update={"enabled": False})


def normalize_batch(df: pl.DataFrame, cfg: NormalizeConfig, nlp: Any = None) -> StageResult:
    """Decode, repair and clean a batch; quarantine undecodable and empty records; replace
    PII in the rest (`nlp`: the spaCy pipeline `cfg.pii.ner_model` names, loaded)."""
    undecoded = df[TEXT].is_null() & df["raw"].is_not_null()
    decoded = [decode(r, cfg.fallback_encodings) for r in df.filter(undecoded)["raw"]]
    text = df[TEXT].scatter(undecoded.arg_true(), pl.Series(decoded, dtype=pl.String))
    out = df.with_columns(text.alias(TEXT))
    if cfg.enabled and cfg.fix_mojibake:
        out = out.with_columns(repair(out[TEXT], fixer(cfg), cfg.fold_whitespace))
    elif cfg.enabled:
        out = out.with_columns(clean(pl.col(TEXT), fold=cfg.fold_whitespace))
    tried = ", ".join(("utf-8", *cfg.fallback_encodings))
    rules = [
        Rule(UNDECODABLE, pl.col(TEXT).is_null(), pl.lit(f"not valid in {tried}"), QUARANTINED),
        Rule(EMPTY, pl.col(TEXT).str.strip_chars() == "", pl.lit("no text left"), QUARANTINED),
    ]
    result = apply_rules(out, STAGE, rules)
    kept = replace_pii(result.kept.drop("raw"), pii_config(cfg), nlp)
    return StageResult(kept, result.removed)


def _ner(cfg: NormalizeConfig) -> Any:
    pii = pii_config(cfg)
    return load_ner(pii.ner_model) if pii.enabled and pii.ner_model is not None else None


@task(name="normalize")
def normalize(parts: list[str], src: StageDir, out: StageDir, cfg: NormalizeConfig) -> StageStats:
    """Normalize partitions of `src` into `out`."""
    return run_partitions(src, out, parts, lambda df: normalize_batch(df, cfg, _ner(cfg)))
