"""Words and sentences of a batch of documents, per language, for the quality signals.

Languages written with spaces are split by spaCy's `spacy.blank(lang)` tokenizer (the
multi-language `xx` one for a language spaCy lacks). The tokenizer handles each
whitespace-separated piece on its own, so each distinct piece of a batch is tokenized once and
its tokens are placed wherever it occurs. Languages and scripts written without spaces
(Chinese, Japanese, Thai, ...) are counted by character: each character of such a script is
a word, runs of other characters (Latin names, numbers) are words too. A sentence starts at
the first word of a line and after a word ending with one of the punctuation marks of spaCy's
sentencizer (`.`, `!`, `?`, `。`, `।`, ...), as that sentencizer splits.

The result is one row per word: `doc` (row in the batch), `line` (line of the document, from
0), `h` (a 64-bit hash of the word), `len` (characters), `alpha` (has a letter), `symbol`
(punctuation only), `stop` (in the language's stop list), `sent` (starts a sentence) and
`unspaced` (counted by character). Stop lists are spaCy's, or the ones a config names.
"""

import functools
import string
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tasks.lazy import serial_imports

if TYPE_CHECKING:  # spaCy (and torch, through thinc) load on first use: 1-2 s per process
    from spacy.language import Language
    from spacy.vocab import Vocab

UNSPACED_LANGS = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu", "dz"})
# Scripts written without spaces between words (regex class body; MinHash shingles them too).
UNSPACED_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}"
UNSPACED_SCRIPT_CODES = frozenset({"Hani", "Jpan", "Hira", "Kana", "Thai", "Laoo", "Khmr", "Mymr",
                                   "Tibt"})  # fmt: skip
# A word when counting by character: one character (with its marks) of an unspaced script,
# or a run of other non-space characters.
WORD = rf"[[{UNSPACED_SCRIPTS}]&&\P{{M}}]\p{{M}}*|[^\s{UNSPACED_SCRIPTS}]+"
# Tokenizer settings that keep these languages free of extra packages.
_TOKENIZER_CONFIG = {
    "ko": {"nlp": {"tokenizer": {"@tokenizers": "spacy.Tokenizer.v1"}}},
    "vi": {"nlp": {"tokenizer": {"use_pyvi": False}}},
}
_PIECES_PER_DOC = 20_000  # pieces joined into one text for the tokenizer
_CHARS_PER_DOC = 500_000  # and at most about this many characters (spaCy's limit is 1,000,000)
_MAX_CHARS = 2**31 - 1  # one piece longer than that is not plausible text
_VOCAB_LIMIT = 500_000  # strings a pipeline may keep (about 100 MB) before it is made anew
WORD_COLUMNS = {"doc": pl.UInt32, "line": pl.UInt32, "h": pl.UInt64, "len": pl.UInt32,
                "alpha": pl.Boolean, "symbol": pl.Boolean, "stop": pl.Boolean,
                "sent": pl.Boolean, "unspaced": pl.Boolean}  # fmt: skip


# One blank pipeline per language and process, made on first use, all sharing one vocabulary
# (the tokenizers only need its strings; sharing it makes building a tokenizer's special
# cases about three times cheaper). spaCy objects are not thread-safe: `SPACY_LOCK` guards them.
SPACY_LOCK = threading.RLock()
_PIPELINES: dict[str, "Language"] = {}
_VOCAB: list["Vocab"] = []


@functools.cache
def sentence_end_class() -> str:
    """The punctuation that ends a sentence, spaCy's sentencizer's, as a regex class body."""
    with serial_imports():
        from spacy.pipeline import Sentencizer

    ends = Sentencizer.default_punct_chars
    return "".join(f"\\{c}" if c in string.punctuation else c for c in ends)


def _blank(lang: str) -> "Language":
    with serial_imports():
        import spacy
        from spacy.vocab import Vocab

        if not _VOCAB:
            _VOCAB.append(Vocab())
        # spacy.blank imports the language's module (spacy.lang.<lang>) on first use
        nlp = spacy.blank(lang, config=_TOKENIZER_CONFIG.get(lang, {}), vocab=_VOCAB[0])
    nlp.max_length = _MAX_CHARS  # only the tokenizer runs: its memory is linear in the text
    # Pieces are tokenized joined by spaces, so a special case that spans a space (Spanish
    # "EE. UU.") would join two pieces, and a document's words would depend on the pieces
    # of the other documents batched with it (so on the partitioning): each piece alone.
    rules = getattr(nlp.tokenizer, "rules", None) or {}
    if any(" " in key.strip() for key in rules):
        nlp.tokenizer.rules = {k: v for k, v in rules.items() if " " not in k.strip()}
    return nlp


@functools.cache
def tokenizer_language(lang: str) -> str:
    """`lang` if spaCy has a tokenizer for it that needs no extra package, else `xx`."""
    with SPACY_LOCK:
        try:
            _PIPELINES.setdefault(lang, _blank(lang))
        except (ImportError, OSError, ValueError):  # no such language, or it needs a package
            return "xx"
    return lang


def pipeline(lang: str) -> "Language":
    """The blank spaCy pipeline (its tokenizer) of `lang`, a `tokenizer_language`; the
    caller holds `SPACY_LOCK`."""
    if lang not in _PIPELINES:
        _PIPELINES[lang] = _blank(lang)
    return _PIPELINES[lang]


def forget_words() -> None:
    """Start afresh with an empty vocabulary (the caller holds `SPACY_LOCK`)."""
    _PIPELINES.clear()
    _VOCAB.clear()


@functools.cache
def spacy_stop_words(lang: str) -> frozenset[str]:
    """spaCy's stop list for `lang` (empty when it has none)."""
    with serial_imports():
        import spacy

        try:
            return frozenset(spacy.util.get_lang_class(lang).Defaults.stop_words)
        except (ImportError, ValueError):
            return frozenset()


def is_unspaced(lang: pl.Expr, script: pl.Expr) -> pl.Expr:
    """Documents to count by character: an unspaced language, or (unknown language) script."""
    return lang.is_in(list(UNSPACED_LANGS)).fill_null(False) | (
        lang.is_null() & script.is_in(list(UNSPACED_SCRIPT_CODES)).fill_null(False)
    )


def chunks(texts: pl.Series, docs: np.ndarray) -> pl.DataFrame:
    """The whitespace-separated pieces of each text, in order: `doc`, `line`, `c`."""
    return (
        pl.DataFrame({"doc": pl.Series(docs, dtype=pl.UInt32), "c": texts.str.split("\n")})
        .explode("c")
        .with_columns(line=pl.int_range(pl.len(), dtype=pl.UInt32).over("doc"))
        .with_columns(pl.col("c").str.extract_all(r"\S+"))
        .explode("c")
        .drop_nulls("c")
    )


def _batches(pieces: list[str]) -> Iterator[list[str]]:
    """Runs of at most `_PIECES_PER_DOC` pieces and about `_CHARS_PER_DOC` characters."""
    start, chars = 0, 0
    for i, piece in enumerate(pieces):
        if i > start and (i - start >= _PIECES_PER_DOC or chars + len(piece) > _CHARS_PER_DOC):
            yield pieces[start:i]
            start, chars = i, 0
        chars += len(piece) + 1
    if start < len(pieces):
        yield pieces[start:]


def spacy_tokens(pieces: list[str], lang: str, stop: frozenset[str]) -> pl.DataFrame:
    """spaCy's tokens of each piece (`piece`, in order) with their hash and flags.

    spaCy's tokenizer splits at whitespace first and handles each piece on its own, so the
    pieces are tokenized once each, joined by spaces into long texts. The pipeline keeps the
    words it has seen (most words of a corpus recur) until it knows `_VOCAB_LIMIT` strings,
    then starts afresh, which bounds its memory.
    """
    with serial_imports():
        from spacy.attrs import ORTH, SPACY

    lang = tokenizer_language(lang)
    with SPACY_LOCK:
        nlp = pipeline(lang)
        orths, piece_ids, start = [], [], 0
        for batch in _batches(pieces):
            arr = nlp.make_doc(" ".join(batch)).to_array([ORTH, SPACY]).astype(np.uint64)
            ends = arr[:, 1].astype(np.int64)
            orths.append(arr[:, 0])
            piece_ids.append(start + np.cumsum(ends) - ends)
            start += len(batch)
        orth = np.concatenate(orths) if orths else np.zeros(0, np.uint64)
        words = pl.DataFrame({"o": np.unique(orth)})
        strings = nlp.vocab.strings
        words = words.with_columns(
            w=pl.Series([strings[h] for h in words["o"].to_list()], dtype=pl.String)
        )
        if len(strings) > _VOCAB_LIMIT:
            forget_words()
    table = pl.DataFrame({"piece": np.concatenate(piece_ids) if orths else [], "o": orth})
    flags = word_flags(words, stop).drop("w")
    return table.cast({"piece": pl.UInt32}).join(flags, on="o", how="left", maintain_order="left")


def char_tokens(pieces: list[str], stop: frozenset[str]) -> pl.DataFrame:
    """Tokens of each piece counted by character (see `WORD`), with their hash and flags."""
    table = (
        pl.DataFrame({"w": pieces}, schema={"w": pl.String})
        .with_row_index("piece")
        .with_columns(pl.col("w").str.extract_all(WORD))
        .explode("w")
        .drop_nulls("w")
    )
    return word_flags(table.with_columns(o=pl.col("w").hash()), stop).drop("w")


def word_flags(words: pl.DataFrame, stop: frozenset[str]) -> pl.DataFrame:
    """Add `len`, `alpha`, `symbol`, `stop`, `end` (ends with a sentence's punctuation) and
    `end_only` (is nothing else) to a frame of words `w`."""
    w, ends = pl.col("w"), sentence_end_class()
    return words.with_columns(
        len=w.str.len_chars().cast(pl.UInt32),
        alpha=w.str.contains(r"\p{L}"),
        symbol=~w.str.contains(r"[^\p{P}\p{S}]"),
        stop=w.str.to_lowercase().is_in(list(stop)),
        end=w.str.contains(f"[{ends}]$"),
        end_only=~w.str.contains(f"[^{ends}]"),
    )


def words(df: pl.DataFrame, langs: pl.Series, unspaced: pl.Series, stop_words) -> pl.DataFrame:
    """One row per word of every document of `df` (columns `WORD_COLUMNS`), in order."""
    batch = pl.DataFrame({"text": df["text"], "lang": langs, "unspaced": unspaced})
    frames = []
    for (lang, chars), group in batch.with_row_index("doc").group_by(
        "lang", "unspaced", maintain_order=True
    ):
        pieces = chunks(group["text"], group["doc"].to_numpy())
        distinct = pieces.select(pl.col("c").unique(maintain_order=True))["c"]
        stop = stop_words(lang)
        if chars:
            tokens = char_tokens(distinct.to_list(), stop)
        else:
            tokens = spacy_tokens(distinct.to_list(), lang or "xx", stop)
        frames.append(place(pieces, distinct, tokens).with_columns(unspaced=pl.lit(bool(chars))))
    if not frames:
        return pl.DataFrame(schema=WORD_COLUMNS)
    out = pl.concat([f.select(WORD_COLUMNS.keys()).cast(WORD_COLUMNS) for f in frames])
    return out.sort("doc", maintain_order=True)


def place(pieces: pl.DataFrame, distinct: pl.Series, tokens: pl.DataFrame) -> pl.DataFrame:
    """The tokens of every piece where it occurs, with sentence starts marked."""
    piece_of = pieces.select(
        "doc", "line", piece=pl.col("c").replace_strict(distinct, pl.int_range(distinct.len()),
                                                        return_dtype=pl.UInt32)
    )  # fmt: skip
    spans = tokens.with_row_index("t").group_by("piece").agg(first=pl.col("t").min(), n=pl.len())
    at = piece_of.join(spans, on="piece", how="inner", maintain_order="left")
    n = at["n"].to_numpy().astype(np.int64)
    starts = np.repeat(at["first"].to_numpy().astype(np.int64) - np.cumsum(n) + n, n)
    index = starts + np.arange(int(n.sum()))
    placed = tokens[index].with_columns(
        doc=pl.Series(np.repeat(at["doc"].to_numpy(), n)),
        line=pl.Series(np.repeat(at["line"].to_numpy(), n)),
    )
    same_line = (pl.col("doc") == pl.col("doc").shift(1)) & (
        pl.col("line") == pl.col("line").shift(1)
    )
    after_end = pl.col("end").shift(1) & ~pl.col("end_only")
    return placed.with_columns(h=pl.col("o"), sent=(~same_line | after_end).fill_null(True))
