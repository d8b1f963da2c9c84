import json
import logging
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from tasks.augment import backends as ab
from tasks.augment import base, llm, metrics
from tasks.augment.augment import AugmentConfig
from tests.conftest import english
from tests.tiny_seq2seq import build_byt5, build_marian

KEY = "sk-test-5f1e9c0a7d3b4e21"
KEY_ENV = "REFINERY_TEST_AUGMENT_KEY"
EN = [english(seed, words=12) for seed in range(40)]
DE = "Der Fluss lief an der alten Mühle vorbei und die Kinder sahen dem Wasser zu ."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models are tiny: one thread is faster than several contending with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "en-de": build_marian(root / "opus-tiny-en-de", [*EN, DE], seed=0),
        "de-en": build_marian(root / "opus-tiny-de-en", [*EN, DE], seed=1),
        "t5": build_byt5(root / "byt5-tiny"),
    }


def backtranslate_cfg(models: dict[str, Path], **overrides: object) -> AugmentConfig:
    settings = {"model_a": str(models["en-de"]), "model_b": str(models["de-en"]),
                "max_new_tokens": 8, "batch_size": 4, "device": "cpu"}  # fmt: skip
    return AugmentConfig(enabled=True, backend="backtranslate", **{**settings, **overrides})


def paraphrase_cfg(models: dict[str, Path], **overrides: object) -> AugmentConfig:
    settings = {"model": str(models["t5"]), "prefix": "paraphrase: ", "max_new_tokens": 12,
                "batch_size": 4, "device": "cpu"}  # fmt: skip
    return AugmentConfig(enabled=True, backend="paraphrase", **{**settings, **overrides})


# -- scores --------------------------------------------------------------------------------


def test_chrf_and_bleu_score_identity_high_and_unrelated_text_low():
    same = "The river ran past the old mill, and the children watched the water."
    other = "Quarterly revenue grew by four percent in Asian markets."
    identical, unrelated = metrics.chrf([same, other], [same, same])
    assert identical == pytest.approx(100.0)
    assert unrelated < 20
    assert metrics.bleu([same], [same]) == pytest.approx(100.0)
    assert metrics.bleu([other], [same]) < 10
    assert metrics.bleu([], []) == 0.0
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        metrics.chrf([same, same], [same])


# -- sentences -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Hello there. How are you?  Fine!\n\nNew paragraph without a full stop",
        "  \n Leading and trailing space. \n\n\n  Indented line.\t\n",
        "",
        "\n\n",
        "one " * 400 + "end.",
        "x" * 1200 + " tail.",
    ],
)
def test_split_document_joins_back_to_the_text(text: str):
    sentences, gaps = ab.split_document(text, ab.sentencizer("en"))
    assert ab.join_document(sentences, gaps) == text
    assert len(gaps) == len(sentences) + 1
    assert all(s == s.strip() and s for s in sentences)


def test_split_document_splits_sentences_and_lines():
    text = "First one. Second one?\nA heading\n\nThird one! Fourth."
    sentences, gaps = ab.split_document(text, ab.sentencizer("en"))
    assert sentences == ["First one.", "Second one?", "A heading", "Third one!", "Fourth."]
    assert gaps == ["", " ", "\n", "\n\n", " ", ""]


def test_long_runs_are_cut_at_spaces():
    sentences, _ = ab.split_document("word " * 300, ab.sentencizer("en"))
    assert len(sentences) == 3
    assert all(len(s) <= ab.MAX_SENTENCE_CHARS for s in sentences)


@pytest.mark.parametrize("lang", ["de", None, "zz", "ja"])
def test_sentencizer_falls_back_to_the_multilanguage_pipeline(lang: str | None):
    sentences, _ = ab.split_document("Eins. Zwei. Drei.", ab.sentencizer(lang))
    assert sentences == ["Eins.", "Zwei.", "Drei."]


# -- seq2seq: batching, with a model that echoes its input ----------------------------------


class EchoModel:
    """generate() returns its input ids, so outputs must equal inputs, in order."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object):
        self.batches.append(attention_mask.sum(dim=1))
        return input_ids


def test_generate_sorts_by_length_pads_minimally_and_keeps_input_order():
    from transformers import ByT5Tokenizer

    model = EchoModel()
    step = ab.Seq2Seq(ByT5Tokenizer(), model)
    sentences = [f"sentence {'x' * n} ends" for n in (5, 40, 1, 22, 3, 30, 0, 12, 9, 17)]
    cfg = AugmentConfig(batch_size=3)
    with base.progress_bar(len(sentences), "test", "sentence") as bar:
        assert ab.generate(step, sentences, cfg, False, bar) == sentences
    lengths = [b.tolist() for b in model.batches]
    assert [len(b) for b in lengths] == [3, 3, 3, 1]
    flat = [n for b in lengths for n in b]
    assert flat == sorted(flat, reverse=True)  # longest first, so each batch pads to its own
    assert ab.generate(step, [], cfg, False, bar) == []


def test_rewrite_rebuilds_every_document_in_order():
    from transformers import ByT5Tokenizer

    step = ab.Seq2Seq(ByT5Tokenizer(), EchoModel(), prefix="")
    backend = ab.Seq2SeqBackend("paraphrase", "echo", (step,), AugmentConfig(batch_size=5))
    long_doc = "\n\n".join(" ".join(EN[i : i + 5]) for i in range(0, 40, 5))
    texts = [long_doc, "Short one.", "", "Two lines.\nSecond line here.", EN[3]]
    out = backend.rewrite(texts, ["en", "en", None, "de", "xx"], variants=2, seed=0)
    assert out == [[t, t] for t in texts]


def test_rewrite_checks_its_arguments(models: dict[str, Path]):
    backend = ab.make_backend(paraphrase_cfg(models))
    with pytest.raises(ValueError, match="2 texts but 1 langs"):
        backend.rewrite(["a", "b"], ["en"], variants=1, seed=0)
    with pytest.raises(ValueError, match="variants must be at least 1"):
        backend.rewrite(["a"], ["en"], variants=0, seed=0)


# -- seq2seq: tiny random models -----------------------------------------------------------


def test_backtranslate_gives_variants_that_differ_and_repeat_for_a_seed(models: dict[str, Path]):
    backend = ab.make_backend(backtranslate_cfg(models))
    assert backend.method == "backtranslate"
    assert backend.model_name == "opus-tiny-en-de+opus-tiny-de-en"
    texts = [EN[0], f"{EN[1]} {EN[2]}", EN[3][:40]]
    out = backend.rewrite(texts, ["en"] * 3, variants=3, seed=7)
    assert [len(v) for v in out] == [3, 3, 3]
    assert all(v and v != text for text, variants in zip(texts, out, strict=True) for v in variants)
    assert all(len(set(variants)) == 3 for variants in out)  # sampled variants differ
    assert backend.rewrite(texts, ["en"] * 3, variants=3, seed=7) == out
    other = backend.rewrite(texts, ["en"] * 3, variants=3, seed=8)
    assert [v[0] for v in other] == [v[0] for v in out]  # variant 0 is greedy
    assert [v[1:] for v in other] != [v[1:] for v in out]


def test_backtranslate_keeps_paragraphs_and_handles_long_documents(models: dict[str, Path]):
    backend = ab.make_backend(backtranslate_cfg(models, batch_size=16))
    three = "\n\n".join([EN[4], f"{EN[5]} {EN[6]}", EN[7]])
    long_doc = "\n".join(" ".join(EN[i : i + 4]) for i in range(0, 40, 4))  # 40 sentences
    (three_out,), (long_out,) = backend.rewrite([three, long_doc], ["en", "en"], 1, seed=0)
    paragraphs = three_out.split("\n\n")
    assert len(paragraphs) == 3 and all(p.strip() for p in paragraphs)
    assert len(long_out.split("\n")) == 10 and long_out != long_doc


def test_batch_order_does_not_change_a_documents_rewrite(models: dict[str, Path]):
    backend = ab.make_backend(backtranslate_cfg(models, batch_size=2))
    texts = [EN[10], f"{EN[11]} {EN[12]} {EN[13]}", EN[14][:30], EN[15]]
    together = backend.rewrite(texts, ["en"] * 4, variants=1, seed=0)
    alone = [backend.rewrite([t], ["en"], variants=1, seed=0)[0] for t in texts]
    assert together == alone


def test_paraphrase_uses_one_model(models: dict[str, Path]):
    cfg = paraphrase_cfg(models)
    backend = ab.make_backend(cfg)
    assert ab.make_backend(cfg) is backend  # loaded once per process
    assert (backend.method, backend.model_name) == ("paraphrase", "byt5-tiny")
    texts = ["The mill is old. The river is fast.", "Children watched.\n\nParents talked."]
    out = backend.rewrite(texts, ["en", "en"], variants=2, seed=3)
    assert [len(v) for v in out] == [2, 2]
    assert all(v != t for t, variants in zip(texts, out, strict=True) for v in variants)
    assert out[1][0].count("\n\n") == 1
    assert backend.rewrite(texts, ["en", "en"], variants=2, seed=3) == out
    assert backend.rewrite([], [], variants=2, seed=3) == []


def test_device_and_dtype():
    assert ab.resolve_device("cpu") == torch.device("cpu")
    assert ab.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert ab.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="'tpu-9'"):
        ab.resolve_device("tpu-9")


# -- llm -----------------------------------------------------------------------------------


class ChatServer:
    """An OpenAI-style chat-completions server, scripted by the user message:
    "rate-limit", "server-error" and "slow" fail their first request, "echo-key" answers with
    the Authorization header, "bad-json" with it outside JSON, "sleepy" takes 50 ms; the model
    "broken" always answers 503."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def reset(self) -> None:
        deadline = time.monotonic() + 5
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)  # a request an earlier test gave up on is still being answered
        with self.lock:
            self.seen.clear()
            self.requests.clear()
            self.max_in_flight = 0

    def answer(self, path: str, auth: str | None, body: dict) -> tuple[int, dict, str]:
        text = body["messages"][-1]["content"]
        with self.lock:
            self.seen[text] += 1
            first = self.seen[text] == 1
        if path != "/v1/chat/completions":
            return 404, {}, "no such route"
        if body["model"] == "broken":
            return 503, {}, f"overloaded (your header was {auth})"
        if text.startswith("rate-limit") and first:
            return 429, {"Retry-After": "0"}, "slow down"
        if text.startswith("server-error") and first:
            return 500, {}, "oops"
        if text.startswith("slow") and first:
            time.sleep(1.0)
        if text == "bad-json":
            return 200, {"Content-Type": "application/json"}, f"not json, but {auth}"
        if text.startswith("sleepy"):
            time.sleep(0.05)
        content = f"echo: {auth}" if text == "echo-key" else f"Rewritten ({body['seed']}): {text}"
        reply = {"id": "c1", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": content}}]}  # fmt: skip
        return 200, {"Content-Type": "application/json"}, json.dumps(reply)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        chat = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                with chat.lock:
                    chat.requests.append({"path": self.path, "auth": auth, "body": body})
                    chat.in_flight += 1
                    chat.max_in_flight = max(chat.max_in_flight, chat.in_flight)
                try:
                    status, headers, text = chat.answer(self.path, auth, body)
                finally:
                    with chat.lock:
                        chat.in_flight -= 1
                data = text.encode()
                try:
                    self.send_response(status)
                    for name, value in {**headers, "Content-Length": str(len(data))}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def chat_server():
    server = ChatServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def chat(chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> ChatServer:
    chat_server.reset()
    monkeypatch.setenv(KEY_ENV, KEY)
    return chat_server


def llm_cfg(server: ChatServer, **overrides: object) -> AugmentConfig:
    settings = {"endpoint": server.url(), "llm_model": "tiny-chat", "api_key_env": KEY_ENV,
                "retries": 2, "backoff_s": 0.01, "timeout_s": 0.3, "concurrency": 2}  # fmt: skip
    return AugmentConfig(enabled=True, backend="llm", **{**settings, **overrides})


def test_llm_sends_prompt_key_and_seed(chat: ChatServer):
    backend = ab.make_backend(llm_cfg(chat, temperature=0.5))
    assert (backend.method, backend.model_name) == ("llm", "tiny-chat")
    out = backend.rewrite(["A text.", "Another."], ["en", None], variants=2, seed=10)
    assert out == [
        ["Rewritten (10): A text.", "Rewritten (11): A text."],
        ["Rewritten (10): Another.", "Rewritten (11): Another."],
    ]
    assert len(chat.requests) == 4
    prompt = (llm.PROMPTS / "wikipedia.txt").read_text().strip()
    for request in chat.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["auth"] == f"Bearer {KEY}"
        assert request["body"]["messages"][0] == {"role": "system", "content": prompt}
        assert request["body"]["temperature"] == 0.5
        assert request["body"]["model"] == "tiny-chat"


def test_llm_without_a_key_sends_no_authorization(chat: ChatServer, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    assert ab.make_backend(llm_cfg(chat)).rewrite(["x"], [None], 1, seed=0) == [
        ["Rewritten (0): x"]
    ]
    assert chat.requests[0]["auth"] is None
    assert ab.make_backend(llm_cfg(chat)).rewrite([], [], 2, seed=0) == []


@pytest.mark.parametrize("style", ["qa", "simple"])
def test_llm_styles_by_name_and_path(chat: ChatServer, tmp_path: Path, style: str):
    ab.make_backend(llm_cfg(chat, style=style)).rewrite(["x"], ["en"], 1, seed=0)
    own = tmp_path / "legal.txt"
    own.write_text("Rewrite it as a contract clause.\n")
    ab.make_backend(llm_cfg(chat, style=str(own))).rewrite(["y"], ["en"], 1, seed=0)
    systems = [r["body"]["messages"][0]["content"] for r in chat.requests]
    assert systems == [
        (llm.PROMPTS / f"{style}.txt").read_text().strip(),
        "Rewrite it as a contract clause.",
    ]


def test_unknown_style_is_a_one_line_value_error(chat: ChatServer):
    with pytest.raises(ValueError) as e:
        ab.make_backend(llm_cfg(chat, style="poetry"))
    assert "'poetry'" in str(e.value) and "qa, simple, wikipedia" in str(e.value)
    assert "\n" not in str(e.value)


def test_llm_retries_429_500_and_timeouts(chat: ChatServer, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    texts = ["rate-limit me", "server-error me", "slow me", "fine"]
    out = ab.make_backend(llm_cfg(chat)).rewrite(texts, [None] * 4, variants=1, seed=1)
    assert out == [[f"Rewritten (1): {t}"] for t in texts]
    assert chat.seen == {"rate-limit me": 2, "server-error me": 2, "slow me": 2, "fine": 1}
    retries = [r.getMessage() for r in caplog.records if r.name == "refinery.augment"]
    assert len(retries) == 3 and any("HTTP 429" in m for m in retries)
    assert KEY not in caplog.text


def test_llm_never_has_more_than_concurrency_requests_in_flight(chat: ChatServer):
    texts = [f"sleepy {i}" for i in range(10)]
    ab.make_backend(llm_cfg(chat, concurrency=3)).rewrite(texts, [None] * 10, 1, seed=0)
    assert len(chat.requests) == 10
    assert chat.max_in_flight == 3


def test_failing_endpoint_raises_backend_error_without_the_key(chat: ChatServer, caplog):
    caplog.set_level(logging.DEBUG)
    backend = ab.make_backend(llm_cfg(chat, llm_model="broken", retries=3))
    with pytest.raises(base.BackendError, match="after 4 attempts: HTTP 503") as e:
        backend.rewrite(["doomed"], ["en"], variants=1, seed=0)
    assert chat.seen["doomed"] == 4  # retries + 1
    assert "[redacted]" in str(e.value) and KEY not in str(e.value)
    assert KEY not in caplog.text


def test_refused_request_fails_at_once(chat: ChatServer):
    backend = ab.make_backend(llm_cfg(chat, endpoint=chat.url("/wrong")))
    with pytest.raises(base.BackendError, match="refused the request: HTTP 404"):
        backend.rewrite(["lost"], ["en"], variants=1, seed=0)
    assert chat.seen["lost"] == 1


def test_connection_errors_are_retried_then_raised():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = AugmentConfig(enabled=True, backend="llm", endpoint=f"http://127.0.0.1:{port}/v1",
                        llm_model="m", retries=1, backoff_s=0.01)  # fmt: skip
    with pytest.raises(base.BackendError, match="after 2 attempts: ConnectError"):
        ab.make_backend(cfg).rewrite(["x"], ["en"], variants=1, seed=0)


def test_key_echoed_by_the_server_is_redacted_from_outputs(chat: ChatServer):
    out = ab.make_backend(llm_cfg(chat)).rewrite(["echo-key"], ["en"], variants=1, seed=0)
    assert out == [["echo: Bearer [redacted]"]]


def test_malformed_answer_raises_backend_error_without_the_key(chat: ChatServer):
    with pytest.raises(base.BackendError, match="without a chat completion") as e:
        ab.make_backend(llm_cfg(chat)).rewrite(["bad-json"], ["en"], variants=1, seed=0)
    assert "[redacted]" in str(e.value) and KEY not in str(e.value)
