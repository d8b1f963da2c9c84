"""The LLM backend: each document rewritten in one chat completion of an OpenAI-compatible
endpoint, with a style prompt from `tasks/resources/augment_prompts`, bounded concurrency,
retries that honour Retry-After, and an API key that never reaches the data or the logs."""

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tasks.augment.base import BackendError, check_batch, progress_bar
from tasks.augment.config import AugmentConfig
from tasks.retry import backoff_delay, retry_after, retryable

PROMPTS = Path(__file__).parents[1] / "resources" / "augment_prompts"
MAX_RETRY_AFTER_S = 300.0  # the longest wait a Retry-After header can ask for

log = logging.getLogger("refinery.augment")


def load_prompt(style: str) -> str:
    """The system prompt of a style: a file in PROMPTS by name, or a path to a prompt file."""
    choices = sorted(p.stem for p in PROMPTS.glob("*.txt"))
    if style in choices:
        return (PROMPTS / f"{style}.txt").read_text(encoding="utf-8").strip()
    if Path(style).is_file():
        return Path(style).read_text(encoding="utf-8").strip()
    raise ValueError(
        f"augment.style {style!r} is neither one of {', '.join(choices)} nor a prompt file"
    )


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "[redacted]") if key else text


class LlmBackend:
    """Rewrites each document in one chat completion, `cfg.concurrency` requests at a time."""

    method = "llm"

    def __init__(self, cfg: AugmentConfig, prompt: str) -> None:
        self.cfg, self.prompt = cfg, prompt
        self.model_name = cfg.llm_model or ""
        self.url = f"{(cfg.endpoint or '').rstrip('/')}/chat/completions"

    def rewrite(
        self, texts: list[str], langs: list[str | None], variants: int, seed: int
    ) -> list[list[str]]:
        """Variant i is asked for with seed + i.

        Raises:
            BackendError: when a request still fails after `cfg.retries` retries, or is refused.
        """
        check_batch(texts, langs, variants)
        key = os.environ.get(self.cfg.api_key_env) or None
        return asyncio.run(self._rewrite_all(texts, variants, seed, key))

    async def _rewrite_all(
        self, texts: list[str], variants: int, seed: int, key: str | None
    ) -> list[list[str]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=self.cfg.concurrency)
        slots = asyncio.Semaphore(self.cfg.concurrency)
        bodies = [self._body(text, seed + i) for text in texts for i in range(variants)]
        client = httpx.AsyncClient(headers=headers, timeout=self.cfg.timeout_s, limits=limits)
        async with client:
            with progress_bar(len(bodies), "augment (llm)", "request") as bar:
                try:
                    async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
                        tasks = [group.create_task(self._complete(client, slots, b, key))
                                 for b in bodies]  # fmt: skip
                        for task in tasks:
                            task.add_done_callback(lambda _: bar.update(1))
                except* BackendError as failed:
                    raise failed.exceptions[0] from None
        done = [task.result() for task in tasks]
        return [done[j * variants : (j + 1) * variants] for j in range(len(texts))]

    async def _complete(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, body: dict, key: str | None
    ) -> str:
        """One rewrite, retried with exponential back-off on 429, 5xx, timeouts and connection
        errors (a Retry-After header can lengthen the wait); other 4xx fail at once."""
        retries = self.cfg.retries
        for attempt in range(1, retries + 2):
            reply = await self._post(client, slots, body)
            asked = None
            if isinstance(reply, httpx.Response):
                if reply.is_success:
                    return _content(reply, self.url, key)
                problem = f"HTTP {reply.status_code}: {_redact(reply.text, key)[:300]}"
                if not retryable(reply.status_code):
                    raise BackendError(f"{self.url} refused the request: {problem}")
                asked = retry_after(reply.headers.get("retry-after"), datetime.now(UTC))
            else:
                problem = _redact(reply, key)
            if attempt > retries:
                raise BackendError(f"{self.url} failed after {attempt} attempts: {problem}")
            wait = backoff_delay(attempt, self.cfg.backoff_s, asked, MAX_RETRY_AFTER_S)
            log.warning(
                "augment llm: %s; retry %d of %d in %.2f s", problem, attempt, retries, wait
            )
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _post(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, body: dict
    ) -> httpx.Response | str:
        """The response, or what went wrong on the way; a slot is held only while the request
        is in flight, not during back-off."""
        try:
            async with slots, asyncio.timeout(self.cfg.timeout_s):
                return await client.post(self.url, json=body)
        except (TimeoutError, httpx.TimeoutException):
            return f"no response within {self.cfg.timeout_s:g} s"
        except httpx.TransportError as e:
            return f"{type(e).__name__}: {e}"

    def _body(self, text: str, seed: int) -> dict:
        messages = [{"role": "system", "content": self.prompt}, {"role": "user", "content": text}]
        return {"model": self.model_name, "messages": messages,
                "temperature": self.cfg.temperature, "seed": seed}  # fmt: skip


def _content(r: httpx.Response, url: str, key: str | None) -> str:
    try:
        content = r.json()["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        text = _redact(r.text, key)[:300]
        raise BackendError(f"{url} answered without a chat completion: {text}") from None
    if not isinstance(content, str):
        raise BackendError(f"{url} answered with no message content")
    return _redact(content.strip(), key)
