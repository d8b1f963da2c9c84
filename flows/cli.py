"""The `refinery` command line.

refinery prepare --input URI... --output DIR [--config FILE] [--set section.key=value ...]
refinery explain DOC_ID --output DIR
refinery verify --output DIR
"""

import argparse
import os
import sys
from pathlib import Path

from flows.config import ConfigError, load_config


def cmd_prepare(args: argparse.Namespace) -> int:
    from tasks.ingest import discover

    cfg = load_config(args.config, args.sets, os.environ)
    discover(args.input)  # a missing input fails here, before any work
    from flows.prepare import prepare

    manifest = prepare(inputs=args.input, output=str(args.output), config=cfg)
    t = manifest["totals"]
    print(
        f"refinery: {t['kept']} of {t['documents']} documents kept in {len(manifest['shards'])} "
        f"shards at {args.output} ({t['dropped']} dropped, {t['quarantined']} quarantined)"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinery", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="raw documents to Arrow shards")
    p.add_argument(
        "--input",
        "-i",
        nargs="+",
        action="extend",
        required=True,
        metavar="URI",
        help="files, directories, globs or fsspec URLs",
    )
    p.add_argument("--output", "-o", type=Path, required=True, metavar="DIR")
    p.add_argument("--config", "-c", type=Path, metavar="FILE", help="YAML config")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable)",
    )
    e = sub.add_parser("explain", help="where a document ended and why")
    e.add_argument("doc_id")
    e.add_argument("--output", "-o", type=Path, required=True, metavar="DIR")
    v = sub.add_parser("verify", help="check every shard against the manifest's sha256")
    v.add_argument("--output", "-o", type=Path, required=True, metavar="DIR")
    return parser


COMMANDS = {"prepare": cmd_prepare, "explain": cmd_explain, "verify": cmd_verify}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"refinery: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
