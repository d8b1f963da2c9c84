"""The `prepare` flow: raw documents to Arrow shards, with every document accounted for.

(crawl ->) ingest -> url_filter -> normalize -> exact_dedup -> minhash -> langid -> quality
(-> decontam) (-> augment) -> shards -> tokenize. Each stage from ingest to the shards is
mapped over the input partitions; the two dedup stages and augment add reduces over the whole
run. tokenize streams the shards into packed token shards for `pretrain`.
"""

import itertools
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.futures import as_completed
from pydantic import BaseModel

from flows.config import PipelineConfig, task_runner, worker_slots
from shards.ledger import ledger_dir
from shards.manifest import read_manifest
from shards.storage import StorageError, check_writable, is_remote, location
from shards.workdir import ReleasedRows, StageDir, crawl_dir, fingerprint, work_dir
from shards.writer import remove_temp_files
from tasks.augment.augment import (
    augment,
    find_near_duplicates,
    generate_variants,
    score_variants,
    select_sources,
)
from tasks.augment.config import Vetting
from tasks.augment.config import stage_key as augment_key
from tasks.clean.normalize import normalize
from tasks.dedup.exact_dedup import exact_dedup, group_range, hash_partitions, join_ranges
from tasks.dedup.minhash_dedup import (
    ClusterInputs,
    bucket_range,
    cluster_ranges,
    minhash_dedup,
    sign_partitions,
)
from tasks.dedup.minhash_dedup import stage_key as minhash_stage_key
from tasks.filter.decontam import DecontamConfig, decontam, index_eval_set
from tasks.filter.langid import langid
from tasks.filter.quality import quality
from tasks.ingest.ingest import ingest
from tasks.ingest.inputs import InputFile, discover, plan_partitions
from tasks.output.export import export_output
from tasks.output.report import write_report
from tasks.output.tokenize import tokenize
from tasks.output.write_shards import publish_ledger, write_run_manifest, write_shards
from tasks.partition import Step, batches, run_steps
from tasks.progress import StageProgress
from tasks.records import StageStats
from tasks.web.crawl import crawl
from tasks.web.url_filter import url_filter


class StageChain:
    """The stages run so far: their work directories, stats and wall times, and the map steps
    queued to run together (`then`, `run`)."""

    def __init__(
        self, work: Path, parts: list[Any], slots: int = 1, keep_work: bool = True
    ) -> None:
        self.work, self.dirs, self.parts, self.slots = work, [], parts, slots
        self.stats: dict[str, tuple[StageStats, float]] = {}
        self._queued: list[tuple[str, Step]] = []
        # Without keep_work, the rows of a stage whose next stage has finished are released,
        # but those of the stages named here (the ones a later run starts from).
        self.keep_work, self.keep_rows, self._released = keep_work, set[str](), set[str]()

    @property
    def last(self) -> StageDir:
        return self.dirs[-1]

    @property
    def names(self) -> list[str]:
        return [getattr(p, "name", p) for p in self.parts]

    def start(self, stage: str, config: BaseModel | dict[str, Any]) -> StageDir:
        """Open the next stage's directory, fingerprinted by its config and upstream."""
        cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
        upstream = self.last.fingerprint if self.dirs else ""
        self.dirs.append(StageDir.of(self.work, stage, cfg, upstream))
        return self.last

    @classmethod
    def resume(
        cls, work: Path, manifest: dict[str, Any], before: str, slots: int = 1,
        keep_work: bool = True,
    ) -> "StageChain":  # fmt: skip
        """The stages a finished run's manifest lists before stage `before`, as they were."""
        chain = cls(work, manifest["inputs"]["partitions"], slots, keep_work)
        for stage, entry in manifest["stages"].items():
            if stage == before or "work" not in entry:
                break
            found = StageDir.named(work, stage, entry["work"])
            if not found.path.is_dir():
                raise FileNotFoundError(f"{found.path} is gone: run prepare again")
            chain.dirs.append(found)
            chain.stats[stage] = (StageStats.from_entry(stage, entry), entry["seconds"])
        return chain

    def then(self, step: Task, *args: Any, whole: bool = False, grouped: bool = False) -> None:
        """Queue a map step of the stage last started: `step(part, *args)` per partition, or
        `step(parts, *args)` per group of partitions (see `tasks.partition.Step`)."""
        self._queued.append((self.last.stage, Step(step, args, whole, grouped)))

    def run(self, scores: dict[str, float] | None = None) -> None:
        """Run the queued map steps over every partition, in batches of partitions per task run,
        then finish each stage whose stats they return; its seconds are the group's wall time,
        shared by the stages in proportion to their compute time."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        started = time.perf_counter()
        stages = list(dict.fromkeys(st for st, _ in queued))
        mapped = run_steps.with_options(task_run_name="+".join(stages))  # its name in the UI
        futures = mapped.map(batches(self.parts, self.slots), unmapped([s for _, s in queued]))
        totals: list[StageStats | None] = [None] * len(queued)
        with StageProgress("-".join(stages), len(futures)) as bar:
            try:
                for done, future in enumerate(as_completed(futures), 1):
                    for i, stats in enumerate(future.result()):
                        if stats is not None:
                            totals[i] = stats if totals[i] is None else totals[i] + stats
                    bar.update(done)
            except BaseException:
                for future in futures:  # none left writing when the caller goes on
                    future.wait()
                raise
        found = [t for t in totals if t is not None]
        wall, compute = time.perf_counter() - started, sum(t.seconds for t in found)
        for stats in found:
            share = stats.seconds / compute if compute else 1 / len(found)
            self.finish(stats, wall * share, scores)
        if not self.keep_work:
            self.release_finished()

    def release_finished(self) -> None:
        """Release the rows of each stage whose next stage has finished, but those of the
        stages in `keep_rows` (and so the last stage's, which has no next one yet)."""
        for stage, after in itertools.pairwise(self.dirs):
            name = stage.path.name
            if after.stage in self.stats and name not in self.keep_rows | self._released:
                stage.release(self.names)
                self._released.add(name)

    def recompute(self, released: ReleasedRows) -> None:
        """Make the released rows a stage needs be computed again: the finished partitions
        of that stage whose rows are gone, and so on up the chain while the rows they are
        computed from are gone too."""
        found = [d.path.name for d in self.dirs].index(released.stage_dir)
        for stage in reversed(self.dirs[: found + 1]):
            gone = stage.released(self.names)
            if not gone:
                break
            stage.forget(gone)

    def finish(
        self, stats: StageStats, seconds: float, scores: dict[str, float] | None = None
    ) -> None:
        """Record a stage's stats (`scores`: figures of the whole stage, for the manifest),
        then log and publish them."""
        stats.scores = {**stats.scores, **(scores or {})}
        self.stats[stats.stage] = (stats, seconds)
        get_run_logger().info(f"{stats.summary()} ({seconds:.1f}s)")
        publish_stage(stats, seconds)


@flow(name="prepare")
def prepare(
    inputs: list[str],
    output: str,
    config: PipelineConfig = PipelineConfig(),  # noqa: B008 (frozen, so safe to share)
) -> dict[str, Any]:
    """Turn the documents under `inputs` into shards, a ledger and a manifest in `output`.

    The stages run as a subflow on the task runner that `config.runner` names, so scheduled
    deployments and the command line honour the same setting.
    """
    if config.runner.kind != "local":
        share_api_url()
    stages = prepare_stages.with_options(task_runner=task_runner(config.runner))
    return stages(inputs, output, config)


def share_api_url() -> None:
    """Point worker processes at this run's Prefect server. Without a server configured, the
    run uses a temporary one that only this process knows of, and each worker process would
    start a temporary server of its own; workers inherit the environment, so set it there."""
    if not os.environ.get("PREFECT_API_URL"):
        with get_client(sync_client=True) as client:
            os.environ["PREFECT_API_URL"] = str(client.api_url)


@flow(name="prepare-stages")
def prepare_stages(inputs: list[str], output: str, config: PipelineConfig) -> dict[str, Any]:
    """The stages of `prepare`, in order (see the module docstring)."""
    cfg, out = config, location(output)
    check_writable(out)
    remove_temp_files(out)  # what a killed run was writing; it is written again below
    if cfg.crawl.seeds and is_remote(out):
        raise StorageError(f"output {out}: a crawl keeps its state on a local disk; crawl to a "
                           "local folder, then prepare from its WARC files")  # fmt: skip
    crawled = crawl(cfg.crawl, crawl_dir(out)) if cfg.crawl.seeds else None
    if crawled is not None:
        inputs = [*inputs, *crawled["warc_files"]]
    files, ignored = discover(inputs)
    slots = worker_slots(cfg.runner)
    ing = cfg.ingest
    parts = plan_partitions(files, ing.partition_bytes, max(1, ing.partitions_per_worker * slots),
                            ing.min_piece_bytes)  # fmt: skip
    inputs_info = describe_inputs(inputs, files, ignored, [getattr(p, "name", p) for p in parts],
                                  crawled)  # fmt: skip
    chain = StageChain(work_dir(out), parts, slots, cfg.runner.keep_work)
    try:
        return run_stages(chain, files, cfg, out, inputs_info)
    except ReleasedRows as released:  # an earlier run's rows, released, needed again
        get_run_logger().info(f"{released}: computing them again")
        chain.recompute(released)
    chain = StageChain(work_dir(out), parts, slots, cfg.runner.keep_work)
    return run_stages(chain, files, cfg, out, inputs_info)


def run_stages(
    chain: StageChain, files: list[InputFile], cfg: PipelineConfig, out: Path,
    inputs_info: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Every stage of `prepare` on `chain`'s partitions, then the shards and the manifest."""
    parts = chain.parts
    ingest_key = {"config": cfg.ingest.model_dump(mode="json"), "files": [asdict(f) for f in files],
                  "plan": [asdict(p) for p in parts]}  # fmt: skip
    chain.then(ingest, chain.start("ingest", ingest_key), cfg.ingest, whole=True, grouped=True)
    if cfg.url_filter.enabled:
        src, dst = chain.last, chain.start("url_filter", cfg.url_filter)
        chain.then(url_filter, src, dst, cfg.url_filter, grouped=True)
    src, dst = chain.last, chain.start("normalize", cfg.normalize)
    chain.then(normalize, src, dst, cfg.normalize, grouped=True)
    dedup(chain, cfg)
    if cfg.langid.enabled:
        src, dst = chain.last, chain.start("langid", cfg.langid)
        chain.then(langid, src, dst, cfg.langid, grouped=True)
    return filter_and_write(chain, out, cfg, inputs_info)


def dedup(chain: StageChain, cfg: PipelineConfig) -> None:
    """Exact, then near-duplicate removal: each hashes every partition, finds the duplicates
    over the whole run, then drops them partition by partition. Hashing joins the map steps
    queued before it, dropping those queued after it."""
    names = chain.names
    ranges = cfg.runner.reduce_tasks or chain.slots
    if cfg.exact_dedup.enabled:
        src, dst = chain.last, chain.start("exact_dedup", cfg.exact_dedup)
        if not dst.duplicates.exists():  # found before, perhaps with another range count
            chain.then(hash_partitions, src, dst, grouped=True)
            chain.run()
            group_range.map(unmapped(dst), unmapped(names), range(ranges),
                            unmapped(ranges)).result()  # fmt: skip
            join_ranges(dst, ranges)
        chain.then(exact_dedup, src, dst, grouped=True)

    if cfg.minhash.enabled:
        key = minhash_stage_key(cfg.minhash, cfg.langid)
        src, dst = chain.last, chain.start("minhash", key)
        if not dst.duplicates.exists():
            chain.then(sign_partitions, src, dst, cfg.minhash, grouped=True)
            chain.run()
            at = ClusterInputs(src, dst, names, cfg.langid)
            bucket_range.map(unmapped(at), range(ranges), unmapped(ranges),
                             unmapped(cfg.minhash)).result()  # fmt: skip
            # On a worker: choosing keepers scores quality, which loads spaCy there anyway.
            cluster_ranges.submit(at, ranges, cfg.minhash).result()
        chain.then(minhash_dedup, src, dst, grouped=True)


def decontaminate(chain: StageChain, cfg: DecontamConfig) -> list[str]:
    """Queue the decontam stage after the index of every evaluation set is built (on
    workers, once per set); returns the indexes' work directories."""
    futures = {name: index_eval_set.submit(chain.work, name, uris, cfg)
               for name, uris in cfg.eval_sets.items()}  # fmt: skip
    indexes = {name: future.result() for name, future in futures.items()}
    names = [d.path.name for d in indexes.values()]
    src, dst = chain.last, chain.start("decontam", {"config": cfg.model_dump(mode="json"),
                                                     "indexes": names})  # fmt: skip
    chain.then(decontam, src, dst, {n: d.index for n, d in indexes.items()}, cfg, grouped=True)
    return names


def describe_inputs(
    uris: list[str],
    files: list[InputFile],
    ignored: list[str],
    names: list[str],
    crawled: dict[str, Any] | None,
) -> dict[str, Any]:
    """The manifest's `inputs`: what was read (and crawled), its partitions, what was left."""
    return {
        "uris": uris,
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "partitions": names,
        "ignored": ignored,
        **({"crawl": crawled} if crawled is not None else {}),
    }


@flow(name="refilter")
def refilter(output: str, config: PipelineConfig) -> dict[str, Any]:
    """Apply `config`'s quality thresholds to a finished `prepare` output: the quality signals
    and every stage before them are read from its work directory, not computed again; the
    shards, ledger and manifest are rewritten as a fresh run with `config` would write them."""
    if config.runner.kind != "local":
        share_api_url()
    stages = refilter_stages.with_options(task_runner=task_runner(config.runner))
    return stages(output, config)


@flow(name="refilter-stages")
def refilter_stages(output: str, config: PipelineConfig) -> dict[str, Any]:
    out = location(output)
    check_writable(out)
    remove_temp_files(out)
    manifest = read_manifest(out)
    chain = StageChain.resume(work_dir(out), manifest, "quality", worker_slots(config.runner),
                              config.runner.keep_work)  # fmt: skip
    return filter_and_write(chain, out, config, manifest["inputs"])


def filter_and_write(
    chain: StageChain, out: Path, cfg: PipelineConfig, inputs_info: dict[str, Any]
) -> dict[str, Any]:
    """The stages from quality on: quality (with the map steps `chain` has queued), shards,
    tokenize, then the ledger, manifest and report."""
    names, beside = inputs_info["partitions"], []
    if cfg.quality.enabled:
        src, dst = chain.last, chain.start("quality", cfg.quality)
        chain.keep_rows.add(src.path.name)  # refilter starts from them
        signals = StageDir.of(chain.work, "signals", cfg.quality.signal_key(), src.fingerprint)
        chain.then(quality, src, signals, dst, cfg.quality, grouped=True)
        beside.append(signals.path.name)
    if cfg.decontam.enabled:
        beside += decontaminate(chain, cfg.decontam)
    chain.run()

    if cfg.augment.enabled:
        vet = Vetting(cfg.normalize, cfg.langid, cfg.quality, cfg.minhash)
        src, dst = chain.last, chain.start("augment", augment_key(cfg.augment, vet))
        select_sources(src, dst, names, cfg.augment)
        chain.then(generate_variants, src, dst, cfg.augment, vet)
        chain.run()
        find_near_duplicates(src, dst, names, cfg.minhash)
        scores = score_variants(src, dst, names)
        chain.then(augment, src, dst)
        chain.run(scores)

    removers = list(chain.dirs)
    run_id = fingerprint("shards", cfg.shards.model_dump(mode="json"), chain.last.fingerprint)
    src, started = chain.last, time.perf_counter()
    chain.start("shards", cfg.shards)
    shards, stats = write_shards(src, names, out, cfg.shards, run_id)
    chain.finish(stats, time.perf_counter() - started)
    if cfg.tokenize.enabled:
        chain.start("tokenize", cfg.tokenize)
        tokens_id, started = (
            fingerprint("tokenize", cfg.tokenize.model_dump(mode="json"), run_id),
            time.perf_counter(),
        )
        stats = tokenize(out, shards, cfg.tokenize, tokens_id, inputs_info["uris"])
        chain.finish(stats, time.perf_counter() - started)
    publish_ledger(removers, names, out)
    work = {d.stage: d.path.name for d in chain.dirs}
    manifest = write_run_manifest(
        out, run_id, cfg.model_dump(mode="json"), inputs_info, shards, chain.stats, work, beside
    )
    report = write_report(out)
    publish_summary(manifest, out, report)
    if cfg.export.formats:  # after the manifest: an export reads a finished output
        export_output(out, cfg.export)
    return manifest


def publish_stage(stats: StageStats, seconds: float) -> None:
    """A table artifact of one stage's counts, for the Prefect UI."""
    row = {"in": stats.n_in, "kept": stats.kept, "seconds": round(seconds, 2),
           "docs_per_sec": round(stats.n_in / seconds, 1) if seconds > 0 else None}  # fmt: skip
    row |= {f"dropped: {r}": n for r, n in sorted(stats.dropped.items())}
    row |= {f"quarantined: {r}": n for r, n in sorted(stats.quarantined.items())}
    create_table_artifact(
        key=f"stage-{stats.stage.replace('_', '-')}", table=[row], description=f"{stats.stage}"
    )


def publish_summary(manifest: dict[str, Any], out: Path, report: Path) -> None:
    """Show the per-stage counts and totals in the Prefect UI."""
    rows = [
        {
            "stage": name,
            "in": s["in"],
            "kept": s["kept"],
            "dropped": sum(s["dropped"].values()),
            "quarantined": s["quarantined"],
            "seconds": s["seconds"],
        }
        for name, s in manifest["stages"].items()
    ]
    create_table_artifact(key="prepare-stages", table=rows, description="Documents per stage")
    t = manifest["totals"]
    create_markdown_artifact(
        key="prepare-summary",
        markdown=f"**{t['kept']}** of {t['documents']} documents kept in "
        f"{len(manifest['shards'])} shards at `{out}`; {t['dropped']} dropped, "
        f"{t['quarantined']} quarantined (see `{ledger_dir(out)}`).\n\n"
        f"Report: [{report}]({report if is_remote(report) else report.resolve().as_uri()})",
    )
