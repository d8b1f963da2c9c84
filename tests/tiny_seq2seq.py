"""Tiny random-weight seq2seq models, saved as transformers folders, for tests and benches of
the augment stage: a MarianMT translation model with a word-level tokenizer, and a T5 with
the byte-level ByT5 tokenizer. Their output is word salad; they exercise the real loading
and generation path without downloading anything."""

from pathlib import Path

import torch


def word_tokenizer(corpus: list[str]):
    """A word-level tokenizer, saved as a fast tokenizer AutoTokenizer can load: id 0 is
    </s>, 1 <unk> and 2 <pad> (Marian's decoder start)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["</s>", "<unk>", "<pad>"])
    )
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=64,
    )


def build_marian(path: Path, corpus: list[str], seed: int) -> Path:
    """A MarianMT model (d_model 16, one layer each side) whose vocabulary is `corpus`'s words."""
    from transformers import MarianConfig, MarianMTModel

    tokenizer = word_tokenizer(corpus)
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=2, eos_token_id=0,
        decoder_start_token_id=2, forced_eos_token_id=0,
    )  # fmt: skip
    model = MarianMTModel(config)
    model.generation_config.min_new_tokens = 2  # random weights may end at once otherwise
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_byt5(path: Path, seed: int = 2) -> Path:
    """A T5 (d_model 16, one layer) with the byte-level ByT5 tokenizer."""
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    model = T5ForConditionalGeneration(config)
    model.generation_config.min_new_tokens = 4
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
