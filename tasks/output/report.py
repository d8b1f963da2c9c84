"""Run report: what a prepare run kept and removed, as PNG plots and one HTML page.

In: a finished output directory (manifest, shards, ledger, tokens manifest). Out:
`<out>/report/` with `index.html` and plots of the language distribution, quality-signal
histograms, duplicate-cluster sizes, removal reasons per stage and tokens per language.
"""

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from prefect import task

from shards.ledger import ledger_files
from shards.manifest import manifest_path, read_manifest, shard_paths
from shards.reader import read_frame
from shards.schema import QUALITY_SIGNALS
from shards.tokens import tokens_dir
from shards.workdir import report_file
from shards.writer import atomic_path
from tasks.lazy import serial_imports

if TYPE_CHECKING:
    with serial_imports():
        from matplotlib.figure import Figure


def load_shards(out: Path) -> pl.DataFrame:
    """The shards' lang and q_* columns (not the text)."""
    paths = shard_paths(out, read_manifest(out)["shards"])
    columns = ["lang", *QUALITY_SIGNALS]
    if not paths:
        return pl.DataFrame(schema={c: pl.Float32 for c in columns})
    return pl.concat([read_frame(p, columns) for p in paths])


def load_ledger(out: Path) -> pl.DataFrame:
    """Every ledger row, without the text."""
    paths = ledger_files(out)
    columns = ["doc_id", "stage", "kind", "reason", "detail"]
    if not paths:
        return pl.DataFrame(schema={c: pl.String for c in columns})
    return pl.concat([read_frame(p, columns) for p in paths])


def cluster_sizes(ledger: pl.DataFrame) -> pl.DataFrame:
    """Size of each duplicate cluster (the kept document plus those dropped as its copies)."""
    dups = ledger.filter(pl.col("reason").str.ends_with("_duplicate"))
    return dups.group_by("stage", "detail").len().with_columns(size=pl.col("len") + 1)


def _figure(width: float, height: float) -> "Figure":
    # No pyplot: no global state, no display. Imported here: 0.4 s, paid only for a report.
    with serial_imports():
        from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig: "Figure", path: Path, tight: bool = True) -> str:
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path.name


def _bars(counts: dict[str, int], title: str, xlabel: str, path: Path) -> str:
    items = sorted(counts.items(), key=lambda kv: kv[1])[-30:]
    fig = _figure(7, max(2.5, 0.25 * len(items) + 1))
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    ax.set(title=title, xlabel=xlabel)
    return _save(fig, path)


def plot_signals(shards: pl.DataFrame, path: Path) -> str:
    """A histogram of every quality signal over the kept documents."""
    cols = 6
    rows = -(-len(QUALITY_SIGNALS) // cols)
    fig = _figure(3 * cols, 2.2 * rows)
    axes = fig.subplots(rows, cols, gridspec_kw={"hspace": 0.6, "wspace": 0.35})
    fig.subplots_adjust(left=0.04, right=0.99, top=0.97, bottom=0.03)  # no tight_layout: slow
    for ax, name in zip(axes.flat, QUALITY_SIGNALS, strict=False):
        values = shards[name].drop_nulls().to_numpy()
        if len(values):
            counts, edges = np.histogram(values, bins=30)
            ax.stairs(counts, edges, fill=True, color="#55a868")  # one artist, not 30 bars
            ax.tick_params(labelsize=7)
        else:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name.removeprefix("q_"), fontsize=8)
    for ax in list(axes.flat)[len(QUALITY_SIGNALS) :]:
        ax.axis("off")
    return _save(fig, path, tight=False)


def plot_clusters(sizes: pl.DataFrame, path: Path) -> str:
    fig = _figure(7, 3)
    ax = fig.subplots()
    for stage in sorted(set(sizes["stage"])):
        ax.hist(sizes.filter(pl.col("stage") == stage)["size"].to_numpy(), bins=20,
                alpha=0.7, label=stage)  # fmt: skip
    ax.set(title="Duplicate cluster sizes", xlabel="documents per cluster", ylabel="clusters")
    if sizes.height:
        ax.legend()
    return _save(fig, path)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


PLOTS = ("languages", "quality_signals", "duplicate_clusters", "removed", "tokens")


def build_report(out: Path) -> Path:
    """Write `<out>/report/` and return the path of its `index.html`."""
    manifest = read_manifest(out)
    shards, ledger = load_shards(out), load_ledger(out)
    reasons = {f"{s}: {r}": n for s, r, n in ledger.group_by("stage", "reason").len().rows()}
    tokens_manifest = manifest_path(tokens_dir(out))
    tokens = json.loads(tokens_manifest.read_text()).get("tokens_per_lang", {}) if (
        tokens_manifest.exists()) else {}  # fmt: skip
    langs = dict(shards["lang"].fill_null("unknown").value_counts().rows())
    png = {n: report_file(out, n, "png") for n in PLOTS}
    images = [
        _bars(langs, "Documents kept per language", "documents", png["languages"]),
        plot_signals(shards, png["quality_signals"]),
        plot_clusters(cluster_sizes(ledger), png["duplicate_clusters"]),
        _bars(reasons, "Documents removed, by stage and reason", "documents", png["removed"]),
    ]
    if tokens:
        images.append(_bars(tokens, "Tokens per language", "tokens", png["tokens"]))
    stages = [{"stage": k, **{f: v for f, v in s.items() if f != "quarantined_reasons"}}
              for k, s in manifest["stages"].items()]  # fmt: skip
    page = (
        "<!doctype html><meta charset='utf-8'><title>refinery report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:"
        "1px solid #ddd;text-align:left}</style>"
        f"<h1>refinery report</h1><p>{html.escape(str(out))}</p>"
        f"<h2>Totals</h2>{_table([manifest['totals']])}<h2>Stages</h2>{_table(stages)}"
        + "".join(f"<h2>{html.escape(i)}</h2><img src='{i}'>" for i in images)
    )
    index = report_file(out, "index", "html")
    with atomic_path(index) as tmp:
        tmp.write_text(page)
    return index


@task(name="report")
def write_report(out: Path) -> Path:
    """Build the run report of a finished output directory."""
    return build_report(out)
