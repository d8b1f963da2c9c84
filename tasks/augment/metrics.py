"""How far a rewrite moved from its source: sentence chrF and corpus BLEU (sacrebleu)."""

from typing import Any

from sacrebleu.metrics import BLEU, CHRF


def chrf(hypotheses: list[str], references: list[str]) -> list[float]:
    """Sentence-level chrF (0-100) of each hypothesis against its reference."""
    _same_length(hypotheses, references)
    metric = CHRF()
    return [
        metric.sentence_score(h, [r]).score for h, r in zip(hypotheses, references, strict=True)
    ]


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) of the hypotheses against their references; 0 for none."""
    _same_length(hypotheses, references)
    return BLEU().corpus_score(hypotheses, [references]).score if hypotheses else 0.0


def _same_length(a: list[Any], b: list[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} hypotheses for {len(b)} references")
