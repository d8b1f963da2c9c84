"""What normalize does to extracted text, step by step (the second part of bench/extract.py).

refinery's extracted texts go through `tasks.clean.normalize.normalize_batch`, as in the pipeline,
with the default `NormalizeConfig` and then with one switch flipped at a time: ftfy as a whole
(`fix_mojibake`), three of ftfy's own steps (`uncurl_quotes`, `fix_character_width`,
`fix_latin_ligatures`), whitespace folding (`fold_whitespace`) and the PII masks
(`pii.enabled`). A step's figures compare the texts with it on and with it off, the rest at the
defaults, so a step that is off by default shows what turning it on would do: the pages whose
text it changes, and both scores (the benchmark's F1, and F1 over whitespace-separated tokens)
either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from tasks.clean.normalize import NormalizeConfig, normalize_batch

Texts = Sequence[str | None]
Score = Callable[[Texts], dict[str, float]]  # texts -> {"f1": ..., "token_f1": ...}

STEPS = {  # the switch: what it does
    "fix_mojibake": "ftfy, all of it",
    "uncurl_quotes": "ftfy: curly quotes to straight",
    "fix_character_width": "ftfy: full-width forms to ASCII",
    "fix_latin_ligatures": "ftfy: Latin ligatures (ﬁ, ĳ) to letters",
    "fold_whitespace": "whitespace folding",
    "pii.enabled": "PII masks",
}


def is_on(cfg: NormalizeConfig, switch: str) -> bool:
    """Whether `switch` (a field of `cfg`, or `pii.enabled`) is on in `cfg`."""
    return cfg.pii.enabled if switch == "pii.enabled" else getattr(cfg, switch)


def flipped(cfg: NormalizeConfig, switch: str) -> NormalizeConfig:
    """`cfg` with one switch turned the other way."""
    if switch == "pii.enabled":
        pii = cfg.pii.model_copy(update={"enabled": not cfg.pii.enabled})
        return cfg.model_copy(update={"pii": pii})
    return cfg.model_copy(update={switch: not getattr(cfg, switch)})


def normalized(texts: Texts, cfg: NormalizeConfig) -> list[str | None]:
    """The texts after normalize, in order; None for an empty or quarantined one."""
    ids = [f"{i:05d}" for i in range(len(texts))]
    df = pl.DataFrame(
        {"doc_id": ids, "text": list(texts), "raw": [None] * len(texts)},
        schema={"doc_id": pl.String, "text": pl.String, "raw": pl.Binary},
    )
    kept = normalize_batch(df, cfg).kept
    by_id = dict(zip(kept["doc_id"], kept["text"], strict=True))
    return [by_id.get(i) for i in ids]


def step_rows(texts: Texts, score: Score, cfg: NormalizeConfig) -> list[dict]:
    """One row per step: whether `cfg` has it on, the pages it alters, scores on and off."""
    default = normalized(texts, cfg)
    rows = []
    for switch, label in STEPS.items():
        other = normalized(texts, flipped(cfg, switch))
        on, off = (default, other) if is_on(cfg, switch) else (other, default)
        altered = sum(a != b for a, b in zip(on, off, strict=True))
        s_on, s_off = score(on), score(off)
        rows.append({"step": f"{label} (`{switch}`)", "default": is_on(cfg, switch),
                     "pages_altered": altered, "f1_on": s_on["f1"], "f1_off": s_off["f1"],
                     "token_f1_on": s_on["token_f1"],
                     "token_f1_off": s_off["token_f1"]})  # fmt: skip
    return rows


def steps_table(rows: list[dict]) -> str:
    """The step rows as markdown."""
    lines = [
        "| normalize step | default | pages it alters | F1 on / off | token F1 on / off |",
        "|---|---|---:|---|---|",
    ]
    for r in rows:
        cells = [r["step"], "on" if r["default"] else "off", str(r["pages_altered"]),
                 f"{r['f1_on']:.4f} / {r['f1_off']:.4f}",
                 f"{r['token_f1_on']:.4f} / {r['token_f1_off']:.4f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
