"""The comparison of an ablation's recipes: what each kept, and how its model did.

Each row holds a recipe's documents kept and training tokens (its prepare manifest and token
manifest), and its model's final held-out loss and perplexity, overall and per language and
source, all measured on the same evaluation set. The loss curves of every recipe go on one plot.
"""

import base64
import html
import json
from pathlib import Path
from typing import Any

from model.launch import read_final, read_metrics
from shards.ablation import comparison_file, recipe_dir, run_dir
from shards.manifest import read_manifest
from shards.tokens import tokens_dir
from shards.writer import atomic_path, write_json

SLICE_COLUMNS = 4  # languages (and sources) given a column of their own, the largest first


def recipe_row(out: Path, name: str) -> dict[str, Any]:
    """One recipe's figures, from its folder and finished run."""
    manifest = read_manifest(recipe_dir(out, name))
    tokens = read_manifest(tokens_dir(recipe_dir(out, name)))
    final = read_final(run_dir(out, name))
    slices = {label: final.get(f"eval_by_{label}", {}) for label in ("lang", "source")}
    return {
        "recipe": name,
        "documents": manifest["totals"]["documents"],
        "kept": manifest["totals"]["kept"],
        "train_tokens": tokens["splits"]["train"]["tokens"],
        "steps": final["step"],
        "eval_loss": round(final["eval_loss"], 4),
        "perplexity": round(final["perplexity"], 2),
        **{f"by_{label}": {k: v["loss"] for k, v in s.items()} for label, s in slices.items()},
        "eval_tokens": {
            label: {k: v["tokens"] for k, v in s.items()} for label, s in slices.items()
        },
    }


def largest(rows: list[dict[str, Any]], key: str) -> list[str]:
    """The slices of `key` with the most evaluation tokens (the same set for every recipe)."""
    sizes = rows[0]["eval_tokens"][key.removeprefix("by_")]
    names = sorted(rows[0][key], key=lambda n: (-sizes.get(n, 0), n))
    return names[:SLICE_COLUMNS]


def rounded(loss: float | None) -> float | None:
    return None if loss is None else round(loss, 4)


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The comparison as flat rows (one per recipe), as a table artifact shows them."""
    langs, sources = largest(rows, "by_lang"), largest(rows, "by_source")
    return [
        {"recipe": r["recipe"], "kept": r["kept"], "train tokens": r["train_tokens"],
         "held-out loss": r["eval_loss"], "perplexity": r["perplexity"],
         **{f"loss lang:{lang}": rounded(r["by_lang"].get(lang)) for lang in langs},
         **{f"loss source:{src}": rounded(r["by_source"].get(src)) for src in sources}}
        for r in rows
    ]  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison table in Markdown."""
    flat = table(rows)
    head = list(flat[0])
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for row in flat:
        cells = [f"{v:,}" if isinstance(v, int) else "-" if v is None else str(v)
                 for v in row.values()]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(out: Path, names: list[str], path: Path) -> None:
    """Every recipe's training loss (line) and held-out loss (dots) against step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for i, name in enumerate(names):
        rows, color = read_metrics(run_dir(out, name)), f"C{i}"
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        heldout = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
        if train:
            ax.plot(*zip(*train, strict=True), color=color, label=f"{name}, train")
        if heldout:
            ax.plot(*zip(*heldout, strict=True), "o--", color=color, label=f"{name}, held-out")
    ax.set(xlabel="step", ylabel="cross-entropy (nats)", title="refinery ablation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_comparison(out: Path, names: list[str]) -> list[dict[str, Any]]:
    """Write comparison.json, .png and .html for the recipes `names`; return the rows."""
    rows = [recipe_row(out, name) for name in names]
    write_json({"recipes": rows}, comparison_file(out, "json"))
    plot_curves(out, names, comparison_file(out, "png"))
    png = base64.b64encode(comparison_file(out, "png").read_bytes()).decode()
    flat = table(rows)
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v if v is not None else '-'))}</td>"
                         for v in row.values()) + "</tr>"
        for row in flat
    )  # fmt: skip
    head = "".join(f"<th>{html.escape(k)}</th>" for k in flat[0])
    page = (f"<!doctype html><meta charset='utf-8'><title>refinery ablation</title>"
            f"<h1>refinery ablation</h1><table border=1 cellpadding=4><tr>{head}</tr>{cells}"
            f"</table><p><img src='data:image/png;base64,{png}'></p>"
            f"<pre>{html.escape(json.dumps(rows, indent=1))}</pre>")  # fmt: skip
    with atomic_path(comparison_file(out, "html")) as tmp:
        tmp.write_text(page)
    return rows
