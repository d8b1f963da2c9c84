"""The models behind augment: back-translation, paraphrase and LLM rewriting of whole documents.

`make_backend(cfg)` gives a `Backend` whose `rewrite` turns a batch of documents into `variants`
new wordings each. The seq2seq backends split each document into sentences (spaCy's rule-based
sentencizer, line by line, so the newlines between paragraphs survive), translate or paraphrase
the distinct sentences of the whole batch in length-sorted batches, and put each document back
together with its original text between the sentences. The LLM backend sends each document, with
a style prompt from `tasks/resources/augment_prompts`, to an OpenAI-compatible chat-completions
endpoint. They bring torch and spaCy: `tasks.augment.augment` imports this module where a model
runs, not at import.
"""

import functools
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spacy
import torch
from spacy.language import Language
from tqdm import tqdm

from tasks.augment.base import Backend, check_batch, progress_bar
from tasks.augment.config import AugmentConfig
from tasks.augment.llm import LlmBackend, load_prompt
from tasks.lazy import serial_imports

MAX_SENTENCE_CHARS = 500  # longer runs (lists, tables) are cut at spaces rather than truncated
MAX_INPUT_TOKENS = 1024  # a last guard for tokenizers that declare no model_max_length
TOP_P = 0.9
# The fields each backend reads; a backend is built once per process for each set of values.
FIELDS = {
    "backtranslate": {"model_a", "model_b", "batch_size", "max_new_tokens", "num_beams"},
    "paraphrase": {"model", "prefix", "batch_size", "max_new_tokens", "num_beams"},
    "llm": {"endpoint", "llm_model", "style", "api_key_env", "temperature", "concurrency",
            "timeout_s", "retries", "backoff_s"},
}  # fmt: skip


@functools.cache
def sentencizer(lang: str | None) -> Language:
    """A blank spaCy pipeline that splits sentences; the multi-language one when spaCy has no
    (dependency-free) support for `lang`."""
    try:
        nlp = spacy.blank((lang or "xx").lower())
    except ImportError:  # unknown code, or one needing an extra tokenizer package (ja, th, vi)
        nlp = spacy.blank("xx")
    nlp.add_pipe("sentencizer")
    return nlp


_LINE = re.compile(r"[^\n]*\S[^\n]*")


def split_document(text: str, nlp: Language) -> tuple[list[str], list[str]]:
    """The sentences of `text`, stripped, and the n + 1 stretches around them, so that
    `join_document(*split_document(text, nlp)) == text`."""
    sentences: list[str] = []
    gaps = [""]
    pos = 0
    for line in _LINE.finditer(text):
        at = line.start()
        for sent in nlp(line.group()).sents:
            for start, end in _pieces(text, at + sent.start_char, at + sent.end_char):
                gaps[-1] += text[pos:start]
                sentences.append(text[start:end])
                gaps.append("")
                pos = end
    gaps[-1] += text[pos:]
    return sentences, gaps


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The span without its outer whitespace, cut at spaces into runs of at most
    MAX_SENTENCE_CHARS where it is longer (a word longer than that stays whole)."""
    out: list[tuple[int, int]] = []
    for m in re.finditer(r"\S+", text[start:end]):
        if out and m.end() - (out[-1][0] - start) <= MAX_SENTENCE_CHARS:
            out[-1] = (out[-1][0], start + m.end())
        else:
            out.append((start + m.start(), start + m.end()))
    return out


def join_document(sentences: list[str], gaps: list[str]) -> str:
    """Interleave the gaps and (rewritten) sentences again."""
    return gaps[0] + "".join(s + g for s, g in zip(sentences, gaps[1:], strict=True))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"augment.device {device!r} is not a torch device: {e}") from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else torch.float32


@dataclass(frozen=True)
class Seq2Seq:
    """A tokenizer and a seq2seq model (`generate`), and the text put before each input."""

    tokenizer: Any
    model: Any
    prefix: str = ""


def load_seq2seq(name: str, prefix: str, device: torch.device, dtype: torch.dtype) -> Seq2Seq:
    with serial_imports():
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=dtype).to(device).eval()
    return Seq2Seq(tokenizer, model, prefix)


def generate(
    step: Seq2Seq, sentences: list[str], cfg: AugmentConfig, sample: bool, bar: tqdm
) -> list[str]:
    """One output per sentence, in input order. Sentences go longest first in batches of
    `cfg.batch_size`, so each batch pads to nearly its own length (and memory runs out, if it
    does, on the first batch)."""
    if not sentences:
        return []
    tok = step.tokenizer
    limit = min(tok.model_max_length, MAX_INPUT_TOKENS)
    ids = tok([step.prefix + s for s in sentences], truncation=True, max_length=limit)["input_ids"]
    order = sorted(range(len(ids)), key=lambda k: -len(ids[k]))
    options = {"do_sample": True, "top_p": TOP_P, "num_beams": 1} if sample else {
        "do_sample": False, "num_beams": cfg.num_beams}  # fmt: skip
    out = [""] * len(ids)
    for start in range(0, len(order), cfg.batch_size):
        batch = order[start : start + cfg.batch_size]
        inputs = tok.pad({"input_ids": [ids[k] for k in batch]}, return_tensors="pt")
        with torch.inference_mode():
            tokens = step.model.generate(
                **inputs.to(step.model.device), max_new_tokens=cfg.max_new_tokens, **options
            )
        for k, text in zip(batch, tok.batch_decode(tokens, skip_special_tokens=True), strict=True):
            out[k] = text.strip()
        bar.update(len(batch))
    return out


class Seq2SeqBackend:
    """Rewrites sentence by sentence through a chain of seq2seq models: there and back for
    back-translation, one paraphrase model otherwise."""

    def __init__(
        self, method: str, model_name: str, steps: tuple[Seq2Seq, ...], cfg: AugmentConfig
    ) -> None:
        self.method, self.model_name, self.steps, self.cfg = method, model_name, steps, cfg

    def rewrite(
        self, texts: list[str], langs: list[str | None], variants: int, seed: int
    ) -> list[list[str]]:
        """Variant 0 is greedy (or beam search); variant i > 0 samples under seed + i."""
        check_batch(texts, langs, variants)
        docs = [split_document(t, sentencizer(lang)) for t, lang in zip(texts, langs, strict=True)]
        unique = list(dict.fromkeys(s for sentences, _ in docs for s in sentences))
        out: list[list[str]] = [[] for _ in texts]
        total = len(unique) * len(self.steps) * variants
        with progress_bar(total, f"augment ({self.method})", "sentence") as bar:
            for i in range(variants):
                if i > 0:
                    torch.manual_seed(seed + i)
                current = unique
                for step in self.steps:
                    current = generate(step, current, self.cfg, i > 0, bar)
                rewritten = dict(zip(unique, current, strict=True))
                for j, (sentences, gaps) in enumerate(docs):
                    out[j].append(join_document([rewritten[s] for s in sentences], gaps))
        return out


_BACKENDS: dict[str, Backend] = {}
_LOCK = threading.Lock()


def make_backend(cfg: AugmentConfig) -> Backend:
    """The backend `cfg` asks for, its models loaded once per process and reused.

    Raises:
        ValueError: for an unknown style, device or a backend without its models.
    """
    key = cfg.model_dump_json(include={"backend", "device", "dtype", *FIELDS[cfg.backend]})
    with _LOCK:
        if key not in _BACKENDS:
            _BACKENDS[key] = _build(cfg)
        return _BACKENDS[key]


def _build(cfg: AugmentConfig) -> Backend:
    if cfg.backend == "llm":
        if not (cfg.endpoint and cfg.llm_model):
            raise ValueError("backend llm needs augment.endpoint and augment.llm_model")
        return LlmBackend(cfg, load_prompt(cfg.style))
    names = [cfg.model_a, cfg.model_b] if cfg.backend == "backtranslate" else [cfg.model]
    if not all(names):
        raise ValueError(f"backend {cfg.backend} is missing a model name: {names}")
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    prefix = cfg.prefix if cfg.backend == "paraphrase" else ""
    steps = tuple(load_seq2seq(str(n), prefix, device, dtype) for n in names)
    model_name = "+".join(_short_name(str(n)) for n in names)
    return Seq2SeqBackend(cfg.backend, model_name, steps, cfg)


def _short_name(name: str) -> str:
    """A local folder's own name (no path of this machine in the data); a hub id as it is."""
    return Path(name).name if Path(name).is_dir() else name
