from pathlib import Path

import polars as pl

from shards.schema import PII_REPLACED
from shards.writer import write_table
from tasks.clean.normalize import (
    EMPTY,
    UNDECODABLE,
    NormalizeConfig,
    clean,
    normalize,
    normalize_batch,
)
from tasks.clean.pii import EMAIL, IP, PERSON, PHONE, PiiConfig
from tasks.partition import StageDir
from tests.tasks.test_pii import save_pipeline


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


def test_repairs_but_keeps_the_style_of_the_text():
    chinese = "你好，世界！（测试）：是？"
    texts = ["“Don’t,” she said. The ﬁrst cafÃ© ＡＢＣ", chinese, "a  b\n\n\n\nc"]
    out = normalize_batch(batch(texts), NormalizeConfig()).kept["text"].to_list()
    # curly quotes and full-width forms as written; mojibake and the "ﬁ" ligature repaired
    assert out == ["“Don’t,” she said. The first café ＡＢＣ", chinese, "a b\n\nc"]


def test_ftfy_style_changes_and_whitespace_folding_are_switches():
    cfg = NormalizeConfig(
        uncurl_quotes=True, fix_character_width=True, fix_latin_ligatures=False,
        fold_whitespace=False,
    )  # fmt: skip
    texts = ["“Don’t” ﬁ ＡＢＣ", "你好，世界！", "a  b\n\n\n\nc"]
    out = normalize_batch(batch(texts), cfg).kept["text"].to_list()
    assert out == ['"Don\'t" ﬁ ABC', "你好,世界!", "a  b\n\n\n\nc"]
    unrepaired = NormalizeConfig(fix_mojibake=False, fold_whitespace=False)
    assert normalize_batch(batch(["cafÃ©  \x00ok"]), unrepaired).kept["text"][0] == "cafÃ©  ok"


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


def test_pii_is_replaced_after_cleaning_and_counted():
    df = batch(["Mail\x00  a@b.org  or call\t555-123-4567\r\n\n\n\nfrom 10.0.0.1", "plain"])
    kept = normalize_batch(df, NormalizeConfig()).kept
    assert kept["text"].to_list() == [f"Mail {EMAIL} or call {PHONE}\n\nfrom {IP}", "plain"]
    assert kept[PII_REPLACED].to_list() == [3, 0]
    assert kept.schema[PII_REPLACED] == pl.UInt32


def test_pii_column_is_there_when_pii_is_off():
    df = batch(["a@b.org", ""])
    for cfg in (NormalizeConfig(enabled=False), NormalizeConfig(pii=PiiConfig(enabled=False))):
        result = normalize_batch(df, cfg)
        assert result.kept["text"].to_list() == ["a@b.org"]
        assert result.kept[PII_REPLACED].to_list() == [0]
        assert result.kept.schema[PII_REPLACED] == pl.UInt32
        assert result.removed["reason"].to_list() == [EMPTY]


def test_task_replaces_names_with_the_configured_pipeline(tmp_path: Path):
    pii = PiiConfig(ner_model=str(save_pipeline(tmp_path / "ner")))
    src, out = StageDir("ingest", tmp_path / "src"), StageDir("normalize", tmp_path / "out")
    write_table(batch(["Ada  Lovelace wrote to ada@example.org."]).to_arrow(), src.kept("p0"))
    stats = normalize.fn(["p0"], src, out, NormalizeConfig(pii=pii))
    kept = pl.read_ipc(out.kept("p0"))
    assert stats.kept == 1
    assert kept["text"].to_list() == [f"{PERSON} wrote to {EMAIL}."]
    assert kept[PII_REPLACED].to_list() == [2]
