"""Writing systems: which Unicode script most of a text's letters belong to.

Scripts are named by their ISO 15924 codes (`Latn`, `Cyrl`, `Hani`, ...). Japanese text, whose
letters mix Han, Hiragana and Katakana, is `Jpan` when kana are at least `KANA_SHARE` of them.
"""

import functools

import numpy as np
import polars as pl

# ISO 15924 code -> Unicode script name as the regex engine knows it.
SCRIPTS = {
    "Latn": "Latin", "Cyrl": "Cyrillic", "Grek": "Greek", "Armn": "Armenian",
    "Geor": "Georgian", "Hebr": "Hebrew", "Arab": "Arabic", "Syrc": "Syriac",
    "Thaa": "Thaana", "Deva": "Devanagari", "Beng": "Bengali", "Guru": "Gurmukhi",
    "Gujr": "Gujarati", "Orya": "Oriya", "Taml": "Tamil", "Telu": "Telugu",
    "Knda": "Kannada", "Mlym": "Malayalam", "Sinh": "Sinhala", "Thai": "Thai", "Laoo": "Lao",
    "Tibt": "Tibetan", "Mymr": "Myanmar", "Khmr": "Khmer", "Ethi": "Ethiopic",
    "Hang": "Hangul", "Hani": "Han", "Hira": "Hiragana", "Kana": "Katakana",
    "Mong": "Mongolian", "Cher": "Cherokee", "Cans": "Canadian_Aboriginal", "Tfng": "Tifinagh",
}  # fmt: skip
CODES = [*SCRIPTS, "Jpan"]
KANA_SHARE = 0.05
_HAN, _HIRA, _KANA = (CODES.index(c) for c in ("Hani", "Hira", "Kana"))
_NONE = len(CODES)  # not a letter, or a script not listed


@functools.cache
def script_table() -> np.ndarray:
    """Script index of every code point of the Basic Multilingual Plane (`_NONE` if none)."""
    chars = pl.Series([chr(c) if not 0xD800 <= c < 0xE000 else " " for c in range(0x10000)])
    table = np.full(0x10000, _NONE, np.uint8)
    for i, name in enumerate(SCRIPTS.values()):
        table[chars.str.contains(rf"^[\p{{{name}}}&&\p{{L}}]$").to_numpy()] = i
    return table


def letter_counts(text: str, max_chars: int) -> np.ndarray:
    """Letters per script (`len(CODES) + 1` counts) in the first `max_chars` characters."""
    cps = np.frombuffer(text[:max_chars].encode("utf-32-le", "replace"), np.uint32)
    idx = script_table()[np.minimum(cps, 0xFFFF)]
    idx[cps > 0xFFFF] = _NONE
    idx[(cps >= 0x20000) & (cps < 0x32000)] = _HAN  # Han extensions B to H
    return np.bincount(idx, minlength=_NONE + 1)


def main_script(counts: np.ndarray) -> str | None:
    """The script with most letters, `Jpan` for Han mixed with enough kana, None for none."""
    letters = counts[:_NONE]
    if letters.sum() == 0:
        return None
    kana = letters[_HIRA] + letters[_KANA]
    if kana and kana >= KANA_SHARE * (kana + letters[_HAN]):
        return "Jpan"
    return CODES[int(letters.argmax())]


def scripts(texts: pl.Series, max_chars: int = 2000) -> pl.Series:
    """The main script of each text (see `main_script`), from its first `max_chars`."""
    out = [None if t is None else main_script(letter_counts(t, max_chars)) for t in texts]
    return pl.Series("script", out, dtype=pl.String)
