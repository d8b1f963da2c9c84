"""The `refinery` command line.

refinery crawl --seeds FILE|URL... --output DIR [--config FILE] [--set crawl.key=value ...]
refinery prepare --input URI... --output DIR [--config FILE] [--set section.key=value ...]
refinery prepare --output DIR --set crawl.seeds='[https://...]'   (crawl, then prepare)
refinery refilter --output DIR --set quality.gopher.min_words=100 ...
refinery explain DOC_ID --output DIR
refinery verify --output DIR
refinery report --output DIR
refinery gc --output DIR [--delete]
refinery tokenizer train --input DIR --output FILE
refinery pretrain --tokens DIR --run DIR [--resume]
refinery export --output DIR --format megatron|hf [--to URI]
refinery ablate --recipes FILE --output DIR [--input URI...] [--set section.key=value ...]
refinery train-quality --positive URI... --negative URI... --output FILE
"""

import argparse
import contextlib
import os
import sys
from pathlib import Path

from flows.config import ConfigError, load_config
from flows.server import TemporaryServer
from shards.storage import check_writable, location

# They run Prefect flows: they need an API.
FLOW_COMMANDS = {"prepare", "refilter", "pretrain", "ablate"}


def runner_sets(args: argparse.Namespace) -> list[str]:
    """`--runner`, `--workers` and `--dask-address` as `--set runner.*` overrides."""
    flags = {"kind": args.runner, "workers": args.workers, "dask_address": args.dask_address}
    return [f"runner.{key}={value}" for key, value in flags.items() if value is not None]


def prefect_api(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The body runs against the temporary server `main` started, or the configured one."""
    return args.server.serve() if args.server else contextlib.nullcontext()


def cmd_crawl(args: argparse.Namespace) -> int:
    import logging

    from shards.workdir import crawl_warcs
    from tasks.web.crawl import LIMIT, REDIRECT, read_seeds, run_crawl

    cfg = load_config(args.config, args.sets, os.environ).crawl
    if args.seeds:
        cfg = cfg.model_copy(update={"seeds": read_seeds(args.seeds)})
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress lines on stderr
    stats = run_crawl(cfg, args.output)
    files = len(crawl_warcs(args.output))
    left = stats.dropped.get(LIMIT, 0)
    refused = sum(stats.dropped.values()) - left - stats.dropped.get(REDIRECT, 0)
    print(
        f"refinery: {stats.kept} pages in {files} WARC files at {args.output} ({refused} "
        f"refused, {sum(stats.quarantined.values())} failed, {left} left by limits)"
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from tasks.ingest.inputs import discover

    cfg = load_config(args.config, [*args.sets, *runner_sets(args)], os.environ)
    if not args.input and not cfg.crawl.seeds:
        raise ConfigError("nothing to prepare: give --input, or crawl.seeds to crawl")
    discover(args.input)  # a missing input fails here, before any work
    check_writable(args.output)  # and an output that cannot be written
    from flows.prepare import prepare

    with prefect_api(args):
        manifest = prepare(inputs=args.input, output=str(args.output), config=cfg)
    t = manifest["totals"]
    made = f"; {t['augmented']} of {t['added']} rewrites kept" if t.get("added") else ""
    print(
        f"refinery: {t['kept']} of {t['documents']} documents kept in {len(manifest['shards'])} "
        f"shards at {args.output} ({t['dropped']} dropped, {t['quarantined']} quarantined{made})"
    )
    return 0


def cmd_refilter(args: argparse.Namespace) -> int:
    from flows.config import refilter_config
    from shards.reader import read_manifest

    manifest = read_manifest(args.output)
    check_writable(args.output)
    cfg = refilter_config(manifest["config"], [*args.sets, *runner_sets(args)])
    from flows.prepare import refilter

    before = manifest["totals"]["kept"]
    with prefect_api(args):
        after = refilter(output=str(args.output), config=cfg)
    t = after["totals"]
    print(
        f"refinery: {t['kept']} of {t['documents']} documents kept (was {before}) in "
        f"{len(after['shards'])} shards at {args.output}"
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from shards.reader import find_document

    hits = find_document(args.output, args.doc_id)
    if not hits:
        print(f"{args.doc_id}: not found in {args.output} (neither in a shard nor in the ledger)")
        return 1
    for hit in hits:
        if hit["where"] == "shard":
            print(f"{args.doc_id}: kept in {hit['file']} row {hit['row']} (from {hit['source']})")
        else:
            detail = f" ({hit['detail']})" if hit["detail"] else ""
            print(
                f"{args.doc_id}: {hit['kind']} at stage {hit['stage']}: {hit['reason']}{detail}"
                f" (from {hit['source']})"
            )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from shards.reader import read_manifest, verify_shards

    problems = verify_shards(args.output)
    for problem in problems:
        print(problem, file=sys.stderr)
    n = len(read_manifest(args.output)["shards"])
    print(f"{args.output}: {n} shards, {len(problems)} problems")
    return 1 if problems else 0


def cmd_gc(args: argparse.Namespace) -> int:
    from shards.manifest import read_manifest, work_in_use
    from shards.workdir import remove_work, unused_work

    unused = unused_work(args.output, work_in_use(read_manifest(args.output)))
    for path, size in unused:
        print(f"{size / 1e6:10.1f} MB  {path}")
    total = sum(size for _, size in unused) / 1e6
    if args.delete:
        for path, _ in unused:
            remove_work(path)
        print(f"refinery: removed {len(unused)} work directories ({total:.1f} MB)")
    else:
        print(f"refinery: {len(unused)} work directories ({total:.1f} MB) that the manifest "
              "does not name; pass --delete to remove them")  # fmt: skip
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tasks.output.report import build_report

    print(f"refinery: report at {build_report(args.output)}")
    return 0


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from shards.reader import read_manifest
    from shards.writer import atomic_path
    from tasks.output.tokenize import iter_texts, train_tokenizer

    paths = [args.input / s["path"] for s in read_manifest(args.input)["shards"]]
    texts = (t for batch in iter_texts(paths) for t in batch["text"])
    sample = (t for _, t in zip(range(args.docs), texts, strict=False))
    tokenizer = train_tokenizer(sample, args.vocab_size)
    with atomic_path(args.output) as tmp:
        tokenizer.save(str(tmp))
    print(f"refinery: tokenizer with {tokenizer.get_vocab_size()} tokens at {args.output}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from model.launch import CHECKPOINTS
    from shards.manifest import manifest_path

    cfg = load_config(args.config, args.sets, os.environ)
    if not manifest_path(args.tokens).is_file():
        raise FileNotFoundError(f"no token shards at {args.tokens} (see `refinery prepare`)")
    if (args.run / CHECKPOINTS / "latest").exists() and not args.resume:
        raise ConfigError(f"{args.run} has checkpoints: pass --resume to continue from them")
    from flows.pretrain import pretrain

    with prefect_api(args):
        final = pretrain(tokens=str(args.tokens), run=str(args.run), config=cfg)
    print(
        f"refinery: step {final['step']}, held-out perplexity {final['perplexity']:.2f}, "
        f"checkpoint {final['checkpoint']}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from shards.exports import export_dir
    from tasks.output.export import export

    to = location(args.to) if args.to else None
    mixture = {}
    if args.mixture:  # inline YAML or a YAML file, checked as the config's `export.mixture`
        text = Path(args.mixture).read_text() if Path(args.mixture).is_file() else args.mixture
        mixture = load_config(sets=[f"export.mixture={text}"]).export.mixture
    for fmt in args.format:
        manifest = export(args.output, fmt, to, mixture)
        counts = ", ".join(f"{s} {v['documents']}" for s, v in manifest["splits"].items())
        print(f"refinery: {fmt} export at {export_dir(args.output, to, fmt)} ({counts} documents)")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from flows.config import load_recipes
    from shards.storage import is_remote
    from tasks.ingest.inputs import discover

    recipes = load_recipes(args.recipes, [*args.sets, *runner_sets(args)])
    if args.input:
        recipes = recipes.model_copy(update={"inputs": args.input})
    if not recipes.inputs:
        raise ConfigError(f"{args.recipes}: no inputs: list them under `inputs` or give --input")
    if is_remote(args.output):
        raise ConfigError(f"ablate writes to a local folder, not {args.output}")
    discover(recipes.inputs)  # a missing input fails here, before any work
    check_writable(args.output)
    from flows.ablate import ablate
    from model.compare import markdown

    with prefect_api(args):
        rows = ablate(recipes=recipes, output=str(args.output))
    print(markdown(rows))
    print(f"refinery: {len(rows)} recipes compared in {args.output}/comparison.html")
    return 0


def cmd_train_quality(args: argparse.Namespace) -> int:
    from tasks.filter.quality_model import read_texts, train_quality_model

    positive, negative = read_texts(args.positive), read_texts(args.negative)  # checks paths
    options = {"epochs": args.epochs, "seed": args.seed, "max_docs": args.max_docs}
    given = {key: value for key, value in options.items() if value is not None}
    stats = train_quality_model(positive, negative, args.output, **given)
    docs, skipped = stats["docs"], sum(stats["skipped"].values())
    print(
        f"refinery: quality model at {args.output} ({docs['hq']} hq and {docs['lq']} lq "
        f"documents, {skipped} without text skipped; held-out accuracy "
        f"{stats['heldout_accuracy']:.3f} on {stats['heldout_docs']})"
    )
    return 0


def add_set_flag(p: argparse.ArgumentParser, metavar: str, help: str) -> None:
    p.add_argument("--set", dest="sets", action="append", default=[], metavar=metavar, help=help)


def add_runner_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runner", choices=["local", "process", "dask"], help="runner.kind")
    p.add_argument("--workers", type=int, help="threads, processes or Dask workers")
    p.add_argument("--dask-address", metavar="URL", help="an existing Dask scheduler")


def add_crawl(sub: argparse._SubParsersAction) -> None:
    """`refinery crawl`: its arguments."""
    c = sub.add_parser("crawl", help="crawl web pages into WARC files (resumes a killed crawl)")
    c.add_argument(
        "--seeds",
        nargs="+",
        action="extend",
        metavar="FILE|URL",
        help="start URLs, or files of one URL a line (default: crawl.seeds of the config)",
    )
    c.add_argument("--output", "-o", type=Path, required=True, metavar="DIR")
    c.add_argument("--config", "-c", type=Path, metavar="FILE", help="YAML config")
    add_set_flag(c, "crawl.KEY=VALUE", "override one config value (repeatable)")


def add_prepare(sub: argparse._SubParsersAction) -> None:
    """`refinery prepare`: its arguments."""
    p = sub.add_parser("prepare", help="raw documents to Arrow shards")
    p.add_argument(
        "--input",
        "-i",
        nargs="+",
        action="extend",
        default=[],
        metavar="URI",
        help="files, directories, globs or fsspec URLs (optional when crawl.seeds is set)",
    )
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="a folder or a URL")
    p.add_argument("--config", "-c", type=Path, metavar="FILE", help="YAML config")
    add_set_flag(p, "SECTION.KEY=VALUE", "override one config value (repeatable)")
    add_runner_flags(p)


def add_output_commands(sub: argparse._SubParsersAction) -> None:
    """`refinery refilter`, `explain`, `verify`, `report` and `gc`: commands on a finished
    output."""
    f = sub.add_parser("refilter", help="re-apply changed quality thresholds to a finished output")
    f.add_argument("--output", "-o", required=True, metavar="DIR")
    add_set_flag(f, "quality.KEY=VALUE", "a changed threshold, e.g. quality.gopher.min_words=100")
    add_runner_flags(f)
    e = sub.add_parser("explain", help="where a document ended and why")
    e.add_argument("doc_id")
    e.add_argument("--output", "-o", required=True, metavar="DIR")
    v = sub.add_parser("verify", help="check every shard against the manifest's sha256")
    v.add_argument("--output", "-o", required=True, metavar="DIR")
    rp = sub.add_parser("report", help="plots and an HTML page of a finished output")
    rp.add_argument("--output", "-o", required=True, metavar="DIR")
    g = sub.add_parser("gc", help="list (or --delete) work directories the manifest does not name")
    g.add_argument("--output", "-o", required=True, metavar="DIR")
    g.add_argument("--delete", action="store_true", help="remove them (default: only list them)")


def add_tokenizer(sub: argparse._SubParsersAction) -> None:
    """`refinery tokenizer train`: its arguments."""
    t = sub.add_parser("tokenizer", help="tokenizer tools").add_subparsers(
        dest="action", required=True
    )
    tt = t.add_parser("train", help="train a byte-level BPE tokenizer on text shards")
    tt.add_argument("--input", required=True, metavar="SHARDS", help="a prepare output")
    tt.add_argument("--vocab-size", type=int, default=8192)
    tt.add_argument("--docs", type=int, default=20_000, help="documents sampled (default 20000)")
    tt.add_argument("--output", type=Path, required=True, metavar="FILE")


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    """`refinery pretrain`: its arguments."""
    r = sub.add_parser("pretrain", help="train the model on token shards with DeepSpeed")
    r.add_argument(
        "--tokens", type=Path, required=True, metavar="DIR", help="<prepare output>/tokens"
    )
    r.add_argument("--run", type=Path, required=True, metavar="DIR", help="checkpoints and metrics")
    r.add_argument("--config", "-c", type=Path, metavar="FILE", help="YAML config")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE")
    r.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")


def add_export(sub: argparse._SubParsersAction) -> None:
    """`refinery export`: its arguments."""
    x = sub.add_parser("export", help="a finished output in Megatron's or Hugging Face's format")
    x.add_argument("--output", "-o", required=True, metavar="DIR", help="a finished output")
    x.add_argument("--format", "-f", nargs="+", action="extend", required=True,
                   choices=["megatron", "hf"], help="one or more formats")  # fmt: skip
    x.add_argument("--to", metavar="URI", help="where (default <output>/export/<format>)")
    x.add_argument("--mixture", metavar="YAML",
                   help='train documents by weight: "{lang: {en: 1}}" or a YAML file')  # fmt: skip


def add_ablate(sub: argparse._SubParsersAction) -> None:
    """`refinery ablate`: its arguments."""
    a = sub.add_parser("ablate", help="compare data recipes by training the same model on each")
    a.add_argument("--recipes", type=Path, required=True, metavar="FILE", help="recipes YAML")
    a.add_argument("--output", "-o", type=Path, required=True, metavar="DIR")
    a.add_argument("--input", "-i", nargs="+", action="extend", metavar="URI",
                   help="inputs (instead of the recipes file's)")  # fmt: skip
    add_set_flag(a, "SECTION.KEY=VALUE", "override a key of the base config (repeatable)")
    add_runner_flags(a)


def add_train_quality(sub: argparse._SubParsersAction) -> None:
    """`refinery train-quality`: its arguments."""
    q = sub.add_parser("train-quality", help="train the fastText classifier for quality.model")
    for name, kind in (("--positive", "wanted"), ("--negative", "unwanted")):
        q.add_argument(
            name,
            nargs="+",
            action="extend",
            required=True,
            metavar="URI",
            help=f"{kind} text: input files, directories, globs or prepare outputs",
        )
    q.add_argument("--output", "-o", type=Path, required=True, metavar="FILE", help="model .bin")
    q.add_argument("--max-docs", type=int, metavar="N", help="per class (default 100000)")
    q.add_argument("--epochs", type=int, metavar="N", help="default 5")
    q.add_argument("--seed", type=int, metavar="N", help="deterministic single-threaded training")


def build_parser() -> argparse.ArgumentParser:
    """The `refinery` parser, one subcommand per entry of COMMANDS.

    Returns:
        The parser; `args.command` names the subcommand.
    """
    parser = argparse.ArgumentParser(prog="refinery", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_crawl, add_prepare, add_output_commands, add_tokenizer, add_pretrain,
                add_export, add_ablate, add_train_quality):  # fmt: skip
        add(sub)
    return parser


COMMANDS = {
    "crawl": cmd_crawl,
    "prepare": cmd_prepare,
    "refilter": cmd_refilter,
    "explain": cmd_explain,
    "verify": cmd_verify,
    "report": cmd_report,
    "gc": cmd_gc,
    "tokenizer": cmd_tokenizer,
    "pretrain": cmd_pretrain,
    "export": cmd_export,
    "ablate": cmd_ablate,
    "train-quality": cmd_train_quality,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Started first: it boots while the command imports its stages and checks its config.
    args.server = TemporaryServer.needed() if args.command in FLOW_COMMANDS else None
    try:
        for name in ("output", "input"):  # a prepare output, local or at a URL
            if isinstance(getattr(args, name, None), str):
                setattr(args, name, location(getattr(args, name)))
        return COMMANDS[args.command](args)
    except (ConfigError, OSError, ValueError) as e:  # OSError: a missing input, a full disk, ...
        print(f"refinery: error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.server:
            args.server.stop()


if __name__ == "__main__":
    sys.exit(main())
