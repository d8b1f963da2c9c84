import gzip
import json
from pathlib import Path

import polars as pl
import pytest
import spacy
from pydantic import ValidationError

from shards.schema import PII_REPLACED
from tasks.clean.pii import EMAIL, IP, PERSON, PHONE, PiiConfig, load_ner, mask, replace_pii
from tests.conftest import SAMPLE


def docs(*texts: str) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": list(texts)})


def masked(text: str, cfg: PiiConfig = PiiConfig()) -> str:  # noqa: B008 (frozen)
    return pl.select(mask(pl.lit(text), cfg)).item()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # e-mail addresses
        ("Write to john.doe+news@example.co.uk today.", f"Write to {EMAIL} today."),
        ("mailto:info@mail-server.example.org.", f"mailto:{EMAIL}."),
        ("(a_b%c@sub.example.museum)", f"({EMAIL})"),
        ("联系user@example.com获取", f"联系{EMAIL}获取"),
        # phone numbers: international
        ("Call +44 20 7946 0958 now.", f"Call {PHONE} now."),
        ("Call +1-202-555-0143.", f"Call {PHONE}."),
        ("Tel +49 (0)30 1234 5678", f"Tel {PHONE}"),
        ("Tel +33 1 23 45 67 89", f"Tel {PHONE}"),
        ("Tel +1 (555) 123-4567", f"Tel {PHONE}"),
        ("Tel:+14155552671", f"Tel:{PHONE}"),
        ("Tel +86 138 0013 8000", f"Tel {PHONE}"),
        ("Tel +7 495 123-45-67", f"Tel {PHONE}"),
        # phone numbers: North American
        ("Call (555) 123-4567.", f"Call {PHONE}."),
        ("Call 555-123-4567.", f"Call {PHONE}."),
        ("Call 555.123.4567", f"Call {PHONE}"),
        ("Call 1-800-555-0199", f"Call {PHONE}"),
        ("Main Tel: (206) 543-1695<br>", f"Main Tel: {PHONE}<br>"),
        # phone numbers: national, with a trunk 0
        ("Ruf 030 12345678 an.", f"Ruf {PHONE} an."),
        ("Ruf 030/12345678 an.", f"Ruf {PHONE} an."),
        ("Tel 089/123 4567", f"Tel {PHONE}"),
        ("Tel (030) 12345678", f"Tel {PHONE}"),
        ("Tel 0171 1234567", f"Tel {PHONE}"),
        ("Tel: 020 7946 0958", f"Tel: {PHONE}"),
        ("Tél. 01 23 45 67 89", f"Tél. {PHONE}"),
        ("Tél. 06.12.34.56.78", f"Tél. {PHONE}"),
        ("電話 03-1234-5678", f"電話 {PHONE}"),
        ("电话010-12345678", f"电话{PHONE}"),
        # IPv4
        ("server 192.168.1.1 is down", f"server {IP} is down"),
        ("ssh 10.0.0.1:22", f"ssh {IP}:22"),
        ("from 203.0.113.7.", f"from {IP}."),
        ("http://192.168.0.1/admin", f"http://{IP}/admin"),
        ("net 10.1.0.0/16", f"net {IP}/16"),
        ("range 10.0.0.1-10.0.0.255", f"range {IP}-{IP}"),
        ("服务器172.16.254.1上", f"服务器{IP}上"),
        ("top 255.255.255.255", f"top {IP}"),
        # IPv6
        ("IPv6 2001:db8::1 ok", f"IPv6 {IP} ok"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", IP),
        ("link fe80::1%eth0", f"link {IP}%eth0"),
        ("mapped ::ffff:192.0.2.1", f"mapped {IP}"),
        ("url http://[2001:db8::1]:8080/", f"url http://[{IP}]:8080/"),
        ("prefix 2001:db8::/32", f"prefix {IP}/32"),
        ("FE80::0202:B3FF:FE1E:8329", IP),
    ],
)
def test_recall(text: str, expected: str):
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # dates and times
        "On 2024-05-01, 12.05.2024, 05/01/2024, 01.05.2024 and 2024/05/01.",
        "On 01-05-2024 at 12:30:45, or 10:00, or 2024-05-01T12:30:45Z.",
        # years and ranges
        "In 1999, from 1999-2004 and 2010–2015; pages 123-456, scores 3-2 and 10-20-30.",
        # prices and plain numbers
        "It costs $1,299.99, €12.345,67, 1 234 567 € or 0,99 €.",
        "Population 7 800 000, 1,000,000, 12 345 678 and 1.000.000.000 people.",
        "Call 911, 112 or 0800; room 101; ZIP 90210-1234; 20.000 fans.",
        "Pi is 3.14, e is 2.71828 and 0.123456789 is small.",
        "+15 and +3 and 2+2=4 and +10 000 more.",
        # version numbers, section numbers, OIDs and dotted numbers that are not addresses
        "Version 2.7.18, Python 3.11.4, Chrome 120.0.6099.109 and build 10.0.19041.1.",
        "Versions 1.2.3.4, v10.2.3.4, 1.2.3.4.5 and pkg-10.2.3.4.tar.gz.",
        "See section 7.5.1.1項, the formula 1-3.1.4.2 and OID 1.3.6.1.4.1.311.",
        "Not addresses: 300.1.1.1, 256.100.100.100, 01.02.03.04 and 192.168.1.",
        # ISBNs
        "ISBN 978-3-16-148410-0, ISBN 0-306-40615-2, ISBN 0306406152, 978-0-306-40615-7.",
        # colons: times, verses, ratios, MAC addresses and code
        "John 3:16, 16:9, 1:1, 00:1A:2B:3C:4D:5E.",
        "C++ std::vector, A::f(), Foo::Bar; Python a[::2], a[::-1]; CSS ::before; f :: Int.",
        # no domain, no address
        "user@localhost, @handle, a @ b, name [at] example [dot] com, logo@2x.",
        # coordinates
        "51.5074, -0.1278 and 40.7128° N.",
    ],
)
def test_precision(text: str):
    out = replace_pii(docs(text), PiiConfig())
    assert out["text"].to_list() == [text]
    assert out[PII_REPLACED].to_list() == [0]


def test_ipv4_decision_one_long_number_makes_an_address():
    assert masked("version 10.2.3.4") == f"version {IP}"
    assert masked("version 1.2.3.4, DNS 8.8.8.8") == "version 1.2.3.4, DNS 8.8.8.8"


def test_lists_one_character_apart():
    text = "10.0.0.1\n10.0.0.2,10.0.0.3 fe80::1\nfe80::2\n555-123-4567\n555-123-4568"
    out = replace_pii(docs(text), PiiConfig())
    assert out["text"][0] == f"{IP}\n{IP},{IP} {IP}\n{IP}\n{PHONE}\n{PHONE}"
    assert out[PII_REPLACED].to_list() == [7]


def test_counts_per_document_and_column_type():
    out = replace_pii(
        docs("a@b.org, c@d.org or +44 20 7946 0958 from 10.0.0.1", "nothing here", ""),
        PiiConfig(),
    )
    assert out["text"][0] == f"{EMAIL}, {EMAIL} or {PHONE} from {IP}"
    assert out[PII_REPLACED].to_list() == [4, 0, 0]
    assert out.schema[PII_REPLACED] == pl.UInt32


def test_mask_tags_already_in_the_text_are_not_counted():
    out = replace_pii(docs(f"literal {IP} and {PERSON}, then a@b.org"), PiiConfig())
    assert out[PII_REPLACED].to_list() == [1]


def test_each_kind_can_be_switched_off():
    text = "a@b.org 10.0.0.1 555-123-4567"
    assert masked(text, PiiConfig(emails=False)) == f"a@b.org {IP} {PHONE}"
    assert masked(text, PiiConfig(ips=False)) == f"{EMAIL} 10.0.0.1 {PHONE}"
    assert masked(text, PiiConfig(phones=False)) == f"{EMAIL} {IP} 555-123-4567"


def test_disabled_changes_nothing_but_adds_the_column():
    out = replace_pii(docs("a@b.org"), PiiConfig(enabled=False))
    assert out["text"].to_list() == ["a@b.org"]
    assert out[PII_REPLACED].to_list() == [0]
    assert out.schema[PII_REPLACED] == pl.UInt32


def test_config_is_strict():
    with pytest.raises(ValidationError, match="extra"):
        PiiConfig(email=False)
    with pytest.raises(ValidationError, match="frozen"):
        PiiConfig().enabled = False  # type: ignore[misc]


def save_pipeline(path: Path, extra_pipe: str | None = None) -> Path:
    """A tiny spaCy pipeline: an entity ruler that knows a few people and one company."""
    nlp = spacy.blank("en")
    if extra_pipe:
        nlp.add_pipe(extra_pipe)
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Ada Lovelace"},
            {"label": "PERSON", "pattern": "Grace Hopper"},
            {"label": "PER", "pattern": "Alan Turing"},
            {"label": "ORG", "pattern": "Acme"},
        ]
    )
    nlp.to_disk(path)
    return path


def test_names_from_a_saved_pipeline(tmp_path: Path):
    cfg = PiiConfig(ner_model=str(save_pipeline(tmp_path / "ner")))
    text = "Ada Lovelace met Grace Hopper and Alan Turing at Acme; mail ada@example.org."
    out = replace_pii(docs(text, "No one here."), cfg, load_ner(cfg.ner_model))
    assert out["text"].to_list() == [
        f"{PERSON} met {PERSON} and {PERSON} at Acme; mail {EMAIL}.",
        "No one here.",
    ]
    assert out[PII_REPLACED].to_list() == [4, 0]


def test_only_the_labels_asked_for(tmp_path: Path):
    cfg = PiiConfig(ner_model=str(save_pipeline(tmp_path / "ner")), ner_labels=("PERSON",))
    out = replace_pii(docs("Ada Lovelace and Alan Turing"), cfg, load_ner(cfg.ner_model))
    assert out["text"].to_list() == [f"{PERSON} and Alan Turing"]


def test_load_ner_enables_only_entity_components_once(tmp_path: Path):
    path = str(save_pipeline(tmp_path / "ner", extra_pipe="sentencizer"))
    nlp = load_ner(path)
    assert nlp.pipe_names == ["entity_ruler"]
    assert load_ner(path) is nlp


def test_ner_model_that_cannot_be_found_fails_at_config_time():
    with pytest.raises(ValidationError, match="no spaCy pipeline 'no_such_pipeline'"):
        PiiConfig(ner_model="no_such_pipeline")


def test_ner_model_that_cannot_be_loaded_names_the_key(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as error:
        load_ner(str(tmp_path))
    message = str(error.value)
    assert message.startswith("normalize.pii.ner_model: ")
    assert repr(str(tmp_path)) in message
    assert "\n" not in message


def test_pipeline_without_entities_is_refused(tmp_path: Path):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"normalize\.pii\.ner_model: .* has no ner"):
        load_ner(str(tmp_path / "plain"))


def test_a_named_model_must_be_passed_in(tmp_path: Path):
    cfg = PiiConfig(ner_model=str(save_pipeline(tmp_path / "ner")))
    with pytest.raises(ValueError, match="set but not loaded"):
        replace_pii(docs("Ada Lovelace"), cfg)


def test_real_paragraphs_are_unchanged():
    # Wikipedia paragraphs in 13 languages: many numbers, dates and years, no PII.
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    out = replace_pii(docs(*texts), PiiConfig())
    assert out["text"].to_list() == texts
    assert out[PII_REPLACED].sum() == 0
