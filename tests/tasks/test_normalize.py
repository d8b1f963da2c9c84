import polars as pl

from tasks.normalize import EMPTY, UNDECODABLE, NormalizeConfig, clean, normalize_batch


def batch(texts: list[str | None], raws: list[bytes | None] | None = None) -> pl.DataFrame:
    raws = raws or [None] * len(texts)
    return pl.DataFrame(
        {"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts, "raw": raws},
        schema={"doc_id": pl.String, "text": pl.String, "raw": pl.Binary},
    )


def test_mojibake_control_characters_and_whitespace():
    df = batch(["The cafÃ© was fine â€” really.\x00\x07  Next\t\tline \r\n\n\n\nEnd."])
    out = normalize_batch(df, NormalizeConfig()).kept["text"][0]
    assert out == "The café was fine — really. Next line\n\nEnd."


def test_nfc():
    decomposed = "Cafe\u0301"
    assert pl.select(clean(pl.lit(decomposed))).item() == "Café"


def test_fallback_encoding_decodes_cp1252():
    df = batch([None], ["naïve café".encode("cp1252")])
    assert normalize_batch(df, NormalizeConfig()).kept["text"][0] == "naïve café"


def test_undecodable_is_quarantined_with_the_encodings_tried():
    df = batch([None, "fine"], [b"\x81\x8d\x90", None])
    result = normalize_batch(df, NormalizeConfig())
    assert result.kept["doc_id"].to_list() == ["d1"]
    row = result.removed.row(0, named=True)
    assert (row["doc_id"], row["reason"], row["kind"]) == ("d0", UNDECODABLE, "quarantined")
    assert "cp1252" in row["detail"]


def test_empty_is_quarantined():
    result = normalize_batch(batch(["  \n\t ", "\x00\x01", "ok"]), NormalizeConfig())
    assert result.removed["reason"].to_list() == [EMPTY, EMPTY]
    assert result.kept["text"].to_list() == ["ok"]


def test_disabled_only_decodes():
    result = normalize_batch(batch(["a  b", ""]), NormalizeConfig(enabled=False))
    assert result.kept["text"].to_list() == ["a  b"]
    assert result.removed["reason"].to_list() == [EMPTY]


def test_idempotent():
    df = batch(["Ünïcödé  text\u200b with\r\nodd   spacing\n\n\n\nand Ã© mojibake"])
    once = normalize_batch(df, NormalizeConfig()).kept
    twice = normalize_batch(once.with_columns(raw=pl.lit(None, pl.Binary)), NormalizeConfig()).kept
    assert once["text"].to_list() == twice["text"].to_list()
