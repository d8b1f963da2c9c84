import polars as pl
import pytest

from shards.schema import QUALITY_SIGNALS
from tasks import quality as q
from tests.conftest import english

CFG = q.QualityConfig()


def run(text: str, lang: str = "en") -> q.StageResult:
    return q.score_quality(pl.DataFrame({"doc_id": ["d"], "text": [text], "lang": [lang]}), CFG)


def test_good_english_passes_and_has_signals():
    result = run(english(1, 120))
    assert result.kept.height == 1
    assert result.kept["q_word_count"][0] == 120
    assert set(QUALITY_SIGNALS) <= set(result.kept.columns)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("too short to keep", q.WORD_COUNT),
        (" ".join(["extraordinarily"] * 60) + " the and of", q.MEAN_WORD_LENGTH),
        (english(2, 60) + " #tag" * 10, q.SYMBOL_RATIO),
        ("\n".join(f"- {english(i, 12)}" for i in range(8)), q.BULLET_LINES),
        ("\n".join(f"{english(i, 12)}..." for i in range(8)), q.ELLIPSIS_LINES),
        (english(3, 50) + " 12 34 56 78 90 11 22 33 44 55 66 77 88 99 10 20 30", q.ALPHA_WORDS),
        (" ".join(["river", "mill", "water", "road"] * 20), q.STOP_WORDS),
    ],
)
def test_each_rule_drops_with_its_reason(text, reason):
    result = run(text)
    assert result.removed["reason"].to_list() == [reason]


def test_unspaced_scripts_are_not_dropped_for_word_length():
    zh = "人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的智能机器。" * 3
    result = run(zh, "zh")
    assert result.kept.height == 1, result.removed
    assert result.kept["q_mean_word_length"][0] is None


def test_stop_word_rule_only_for_listed_languages():
    german = " ".join(["Fluss", "Mühle", "Wasser", "Straße"] * 20)
    assert run(german, "de").kept.height == 1
