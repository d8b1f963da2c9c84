import numpy as np

from tasks.output.tokenize import EOD, SPECIAL_TOKENS, encode, is_heldout, train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs.",
    "快速的棕色狐狸",
]


def test_byte_level_bpe_round_trips_any_text_and_has_special_tokens():
    tokenizer = train_tokenizer(iter(TEXTS * 20), vocab_size=300)
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    for text in [*TEXTS, "unseen ünïcödé ☃ text"]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_documents_are_joined_by_the_end_of_document_token():
    tokenizer = train_tokenizer(iter(TEXTS * 20), vocab_size=300)
    eod = tokenizer.token_to_id(EOD)
    ids, lengths = encode(TEXTS[:2], tokenizer, eod)
    assert (ids == eod).sum() == 2 and ids[-1] == eod
    assert lengths.sum() == len(ids) and ids[lengths[0] - 1] == eod


def test_heldout_choice_is_stable_and_about_the_fraction():
    ids = [f"doc-{i}" for i in range(10_000)]
    chosen = is_heldout(ids, 0.1, seed=0)
    assert np.array_equal(chosen, is_heldout(list(reversed(ids)), 0.1, seed=0)[::-1])
    assert 0.08 < chosen.mean() < 0.12
    assert not np.array_equal(chosen, is_heldout(ids, 0.1, seed=1))
