"""PII replacement, the last step of normalize.

In: text. Out: `text` with e-mail addresses, phone numbers, IPv4 and IPv6 addresses (and, with
a spaCy pipeline, person names) replaced by the mask tags below, and `pii_replaced` (UInt32),
how many were replaced in the document.

The patterns are Rust regexes run by polars over the whole column. Rust regex has no
look-around, so where a pattern must see the character next to a match (an IP address must not
touch a digit and a dot, as in the version 10.2.3.4.5) it captures that character and writes it
back. Digits and word boundaries are ASCII, so an address right next to Chinese or Japanese text
is found. Decisions, all in favour of precision:

- Four dot-separated numbers up to 255, without leading zeros, are an IPv4 address when one of
  them has two or three digits (`192.168.1.1`, `10.0.0.1`, and `10.2.3.4` even as a version: an
  address left in is worse than a version masked). `1.2.3.4` is read as a version, section
  number or dental formula, all found in Wikipedia; the addresses this leaves (four numbers
  under 10, such as the public resolvers 1.1.1.1 and 8.8.8.8) are rarely personal. Nor is it
  an address when a letter, a digit and a dot, or a dot and a letter or digit touch it
  (`v10.2.3.4`, `10.2.3.4.5`, `10.2.3.4.tar.gz`).
- IPv6 addresses need two groups at least (`fe80::1`, not `::1`), and two-group ones a digit,
  so `A::f` in C++ and `[::2]` in Python stay.
- Phone numbers are international (`+` and 9 to 15 digits), North American (`(555) 123-4567`,
  `555-123-4567`, `555.123.4567`) or national with a trunk 0 and a separator (`030 12345678`,
  `020 7946 0958`, `01 23 45 67 89`, `089/12345678`, `03-1234-5678`), 9 digits or more. So
  dates (`01.05.2024`), years, prices, ISBNs and plain numbers stay. A number written right
  after a phone number (`+44 20 7946 0958 24`) may be taken as part of it.
- E-mail addresses are ASCII (`name@example.org`); obfuscated ones (`name [at] example`) stay.
"""

import functools
import importlib.util
import threading
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field, field_validator

from shards.schema import PII_REPLACED, TEXT
from tasks.lazy import serial_imports


class PiiConfig(BaseModel, frozen=True, extra="forbid"):
    """Which kinds of PII to replace, and the spaCy pipeline that finds names (if any)."""

    enabled: bool = True
    emails: bool = True
    phones: bool = True
    ips: bool = True
    ner_model: str | None = Field(
        None, description="an installed spaCy pipeline package or a saved pipeline directory"
    )
    ner_labels: tuple[str, ...] = Field(
        ("PERSON", "PER"), description="entity labels replaced by <PERSON>"
    )

    @field_validator("ner_model")
    @classmethod
    def _findable(cls, name: str | None) -> str | None:
        # A cheap check that fails at config time; loading it is left to the task.
        if name is None or Path(name).is_dir() or (name.isidentifier() and _is_module(name)):
            return name
        raise ValueError(
            f"no spaCy pipeline {name!r}: neither an installed package nor a directory"
        )


EMAIL = "<EMAIL>"
PHONE = "<PHONE>"
IP = "<IP>"
PERSON = "<PERSON>"
_MASK_TAGS = "<(?:EMAIL|PHONE|IP|PERSON)>"

# spaCy factories that set doc.ents, and those a trained NER may listen to.
_ENTITY_FACTORIES = {"ner", "beam_ner", "entity_ruler"}
_SHARED_FACTORIES = {"tok2vec", "transformer", "curated_transformer"}

_EMAIL = r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}(?-u:\b)"

# Octets without leading zeros: long (10 to 255) and short (0 to 9).
_LONG = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9])"
_SHORT = r"[0-9]"
_OCTET = rf"(?:{_LONG}|{_SHORT})"
# Four octets, one of them long: the first long one is the first, second, third or fourth.
_IPV4 = "|".join(r"\.".join([_SHORT] * i + [_LONG] + [_OCTET] * (3 - i)) for i in range(4))
_HEX = r"[0-9A-Fa-f]{1,4}"
# 1 to 4 hex digits, one of them a decimal digit.
_HEX_DIGIT = (
    r"(?:[0-9][0-9A-Fa-f]{0,3}|[A-Fa-f][0-9][0-9A-Fa-f]{0,2}"
    r"|[A-Fa-f]{2}[0-9][0-9A-Fa-f]?|[A-Fa-f]{3}[0-9])"
)
_IPV6 = "|".join(
    [
        rf"(?:::(?:[Ff]{{4}}:)?|(?:{_HEX}:){{6}})(?:{_IPV4})",  # with an IPv4 address inside
        rf"(?:{_HEX}:){{7}}{_HEX}",
        *(rf"(?:{_HEX}:){{{k}}}(?::{_HEX}){{1,{7 - k}}}" for k in range(2, 7)),
        rf"{_HEX}:(?::{_HEX}){{2,6}}",
        rf"{_HEX_DIGIT}::{_HEX}|{_HEX}::{_HEX_DIGIT}",
        rf"(?:{_HEX}:){{2,7}}:",
        rf":(?::{_HEX}){{2,7}}",
    ]
)
# What may touch an address: `l` before it, `r` after it (a dot only at the end of a sentence).
_IP_LEFT = r"(?P<l>^|[^0-9A-Za-z_.])"
_IP_RIGHT = r"(?P<r>$|[^0-9A-Za-z_.]|\.$|\.[^0-9A-Za-z_])"
_IPV4_BOUNDED = rf"{_IP_LEFT}(?:{_IPV4}){_IP_RIGHT}"
# An IPv6 address cannot touch another colon.
_IPV6_BOUNDED = (
    rf"(?P<l>^|[^0-9A-Za-z_.:])(?:{_IPV6})(?P<r>$|[^0-9A-Za-z_.:]|[.:]$|[.:][^0-9A-Za-z_])"
)

_INTERNATIONAL = r"\+[1-9](?:[ ./()-]{0,3}[0-9]){8,14}"
_NORTH_AMERICAN = (
    r"(?:1[ .-]?)?(?:\([2-9][0-9]{2}\) ?[0-9]{3}[ .-]|[2-9][0-9]{2}[.-][0-9]{3}[.-])[0-9]{4}"
)
# Trunk 0, an area code, then one kind of separator: 9 to 15 digits in all.
_NATIONAL = (
    r"0[1-9][0-9]{0,3}(?: [0-9](?: ?[0-9]){6,9}|\.[0-9](?:\.?[0-9]){6,9}|-[0-9](?:-?[0-9]){6,9}"
    r"|/ ?[0-9](?:[ -]?[0-9]){6,9})|\(0[1-9][0-9]{0,3}\) ?[0-9](?:[ -]?[0-9]){6,9}"
)
# A phone number does not follow a word, a dot, a sign, a slash or a hyphen, nor run into one.
_PHONE = rf"(?P<l>^|[^0-9A-Za-z_.+/-])(?:{_INTERNATIONAL}|{_NORTH_AMERICAN}|{_NATIONAL})(?-u:\b)"


def _is_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _steps(cfg: PiiConfig) -> list[tuple[str, str]]:
    """(pattern, replacement) pairs in the order they run: e-mails, IPs, then phones."""
    steps = [(_EMAIL, EMAIL)] if cfg.emails else []
    if cfg.ips:
        # The character after an address is part of the match, so an address only one
        # character after another one is found by a second pass.
        steps += [(_IPV6_BOUNDED, f"${{l}}{IP}${{r}}"), (_IPV4_BOUNDED, f"${{l}}{IP}${{r}}")] * 2
    if cfg.phones:
        # A number glued to the one before it follows a digit; once that one is a mask tag,
        # a second pass finds it.
        steps += [(_PHONE, f"${{l}}{PHONE}")] * 2
    return steps


def mask(texts: pl.Expr, cfg: PiiConfig) -> pl.Expr:
    """Polars expression: e-mail addresses, IPs and phone numbers replaced as `cfg` says."""
    for pattern, replacement in _steps(cfg):
        texts = texts.str.replace_all(pattern, replacement)
    return texts


@functools.cache
def load_ner(name: str) -> Any:
    """Load a spaCy pipeline once per process, with only its entity components enabled.

    Raises:
        FileNotFoundError: `name` is neither an installed package nor a pipeline directory.
        ValueError: the pipeline has no `ner` or `entity_ruler`.
    """
    with serial_imports():  # spacy.load imports the pipeline's language and components
        import spacy

        try:
            nlp = spacy.load(name)
        except OSError:
            raise FileNotFoundError(
                f"normalize.pii.ner_model: cannot load spaCy pipeline {name!r} "
                "(neither an installed package nor a saved pipeline directory)"
            ) from None
    factories = {pipe: nlp.get_pipe_meta(pipe).factory for pipe in nlp.pipe_names}
    if not _ENTITY_FACTORIES & set(factories.values()):
        raise ValueError(f"normalize.pii.ner_model: {name!r} has no ner or entity_ruler")
    nlp.select_pipes(
        enable=[p for p, f in factories.items() if f in _ENTITY_FACTORIES | _SHARED_FACTORIES]
    )
    # spaCy refuses texts over 1M characters to bound the parser's memory; NER alone needs
    # far less, and a long page must not fail its partition.
    nlp.max_length = max(nlp.max_length, 100_000_000)
    return nlp


def _mask_entities(doc: Any, labels: tuple[str, ...]) -> str:
    parts, end = [], 0
    for ent in doc.ents:
        if ent.label_ in labels:
            parts += [doc.text[end : ent.start_char], PERSON]
            end = ent.end_char
    return "".join([*parts, doc.text[end:]])


_NER_LOCK = threading.Lock()  # a spaCy pipeline is not thread-safe; the thread runner shares it


def replace_names(texts: pl.Series, nlp: Any, labels: tuple[str, ...]) -> pl.Series:
    """Replace the entities of `nlp` labelled one of `labels` by `<PERSON>` (non-null texts)."""
    with _NER_LOCK:
        docs = nlp.pipe(texts.to_list(), batch_size=64)
        masked = [_mask_entities(doc, labels) for doc in docs]
    return pl.Series(texts.name, masked, dtype=pl.String)


def replace_pii(df: pl.DataFrame, cfg: PiiConfig, nlp: Any = None) -> pl.DataFrame:
    """Replace PII in `text` by mask tags and count the replacements per document.

    Args:
        df: rows with a non-null `text`.
        cfg: what to replace; with `enabled: false` the text is left as it is.
        nlp: the pipeline `load_ner(cfg.ner_model)` returned, when `cfg.ner_model` is set.

    Returns:
        `df` with `text` replaced and `pii_replaced` (UInt32) added.

    Raises:
        ValueError: `cfg.ner_model` is set but `nlp` is None.
    """
    if cfg.enabled and cfg.ner_model is not None and nlp is None:
        raise ValueError(f"normalize.pii.ner_model {cfg.ner_model!r} is set but not loaded")
    if not cfg.enabled:
        return df.with_columns(pl.lit(0, pl.UInt32).alias(PII_REPLACED))
    # Each replacement adds one mask tag: counting them before and after is two fast scans
    # instead of one per pattern.
    before = df[TEXT].str.count_matches(_MASK_TAGS)
    texts = df[TEXT] if nlp is None else replace_names(df[TEXT], nlp, cfg.ner_labels)
    texts = pl.select(mask(pl.lit(texts), cfg)).to_series().alias(TEXT)
    replaced = (texts.str.count_matches(_MASK_TAGS) - before).cast(pl.UInt32)
    return df.with_columns(texts, replaced.alias(PII_REPLACED))
