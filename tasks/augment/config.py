"""Augment's settings: which documents are rewritten, by which backend, which rewrites are kept,
and the configs every new document is vetted with (see `tasks.augment.augment`)."""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tasks.clean.normalize import NormalizeConfig
from tasks.dedup.minhash_dedup import MinhashConfig
from tasks.filter.langid import LangIdConfig
from tasks.filter.quality import QualityConfig


class AugmentConfig(BaseModel, frozen=True, extra="forbid"):
    """Which documents are rewritten, by which backend, and which rewrites are kept."""

    enabled: bool = False
    backend: Literal["backtranslate", "paraphrase", "llm"] = "backtranslate"
    # backtranslate: two translation models (hub ids or local folders), there and back
    model_a: str | None = None
    model_b: str | None = None
    # paraphrase: one seq2seq model, and the text put before each input (T5: "paraphrase: ")
    model: str | None = None
    prefix: str = ""
    # llm: an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, TGI, llama.cpp)
    endpoint: str | None = None
    llm_model: str | None = None
    style: str = Field("wikipedia", description="a prompt in tasks/resources/augment_prompts")
    api_key_env: str = Field("OPENAI_API_KEY", description="the variable holding the API key")
    temperature: float = Field(0.7, ge=0)
    concurrency: int = Field(4, gt=0, description="llm requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="per llm request")
    retries: int = Field(3, ge=0, description="on 429, 5xx, timeouts and connection errors")
    backoff_s: float = Field(1.0, ge=0, description="first back-off; doubles each retry")
    # selection
    languages: list[str] = Field([], description="empty: every language")
    min_quality: float | None = Field(None, ge=0, le=1, description="quality_score at least")
    fraction: float = Field(1.0, ge=0, le=1, description="seeded sample of the eligible")
    max_new_docs: int | None = Field(None, gt=0)
    variants: int = Field(1, gt=0, description="rewrites per selected document")
    seed: int = 0
    # which rewrites are kept: chrF against the source inside [min_chrf, max_chrf]
    min_chrf: float = Field(25.0, ge=0, le=100, description="below: drifted too far")
    max_chrf: float = Field(90.0, ge=0, le=100, description="above: a near copy")
    # generation
    batch_docs: int = Field(16, gt=0, description="documents per persisted batch")
    batch_size: int = Field(32, gt=0, description="sentences per forward pass")
    max_new_tokens: int = Field(256, gt=0)
    num_beams: int = Field(1, gt=0, description="1: greedy (sampling when variants > 1)")
    device: str = Field("auto", description="auto: cuda when there is one, else cpu")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _backend_has_its_models(self) -> "AugmentConfig":
        if not self.enabled:
            return self
        needs = {
            "backtranslate": ("model_a", "model_b"),
            "paraphrase": ("model",),
            "llm": ("endpoint", "llm_model"),
        }[self.backend]
        missing = [f"augment.{key}" for key in needs if not getattr(self, key)]
        if missing:
            raise ValueError(f"backend {self.backend} needs {' and '.join(missing)}")
        if self.min_chrf > self.max_chrf:
            raise ValueError(f"min_chrf {self.min_chrf} is above max_chrf {self.max_chrf}")
        return self


@dataclass(frozen=True)
class Vetting:
    """The configs new documents are checked with, as every input document is."""

    normalize: NormalizeConfig
    langid: LangIdConfig
    quality: QualityConfig
    minhash: MinhashConfig


def stage_key(cfg: AugmentConfig, vet: Vetting) -> dict[str, Any]:
    """What the augment stage's output depends on (its work directory's fingerprint)."""
    return {"augment": cfg.model_dump(mode="json")} | {
        name: getattr(vet, name).model_dump(mode="json")
        for name in ("normalize", "langid", "quality", "minhash")
    }
