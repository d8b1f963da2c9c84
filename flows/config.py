"""The one typed config of a pipeline run, and how it is loaded.

Sources, later overriding earlier: the defaults below, a YAML file (`infra/configs/*.yaml`),
environment variables (`PIPE_MINHASH__THRESHOLD=0.7`: section and key joined by `__`), then
`--set section.key=value` overrides. Values from the environment and `--set` are parsed as
YAML, so `--set langid.allow='[en, zh]'` gives a list. Unknown keys and bad values fail before
any work, with one line naming them.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, Field, ValidationError

from flows.lifetime import init_worker
from model.ds_config import PretrainConfig
from tasks.augment.config import AugmentConfig
from tasks.clean.normalize import NormalizeConfig
from tasks.dedup.exact_dedup import ExactDedupConfig
from tasks.dedup.minhash_dedup import MinhashConfig
from tasks.filter.decontam import DecontamConfig
from tasks.filter.langid import LangIdConfig
from tasks.filter.quality import QualityConfig
from tasks.ingest.ingest import IngestConfig
from tasks.output.export import ExportConfig
from tasks.output.tokenize import TokenizeConfig
from tasks.output.write_shards import ShardsConfig
from tasks.web.crawl import CrawlConfig
from tasks.web.url_filter import UrlFilterConfig

ENV_PREFIX = "PIPE_"


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line naming it."""


class RunnerConfig(BaseModel, frozen=True, extra="forbid"):
    """Where the partition tasks run: threads (`local`), processes, or a Dask cluster."""

    kind: Literal["local", "process", "dask"] = "local"
    workers: int | None = Field(None, gt=0, description="threads, processes or Dask workers")
    dask_address: str | None = Field(None, description="an existing scheduler, tcp://host:8786")
    reduce_tasks: int | None = Field(
        None, gt=0, description="hash ranges of the dedup reduce steps; default: worker slots"
    )
    keep_work: bool = Field(
        True,
        description="keep every stage's rows under work/; false: release a stage's rows (and a "
        "dedup stage's keys) once the next stage has finished with them",
    )


def worker_slots(cfg: RunnerConfig) -> int:
    """How many partitions `cfg`'s runner works on at once: its threads or processes, or the
    threads of every worker of the Dask cluster it names (asked of its scheduler)."""
    if cfg.kind == "dask" and cfg.dask_address:
        from distributed import Client

        with Client(cfg.dask_address, timeout=30) as client:
            return max(1, sum(client.nthreads().values()))
    return cfg.workers or os.cpu_count() or 1


def task_runner(cfg: RunnerConfig) -> TaskRunner:
    """The Prefect task runner for `cfg`: one process per core by default off `local`."""
    workers = cfg.workers or os.cpu_count() or 1
    if cfg.kind == "local":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.kind == "process":
        return ProcessPoolTaskRunner(max_workers=workers, initializer=init_worker)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    # Worker processes with one thread each: the GIL never serialises two partitions.
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})


class PipelineConfig(BaseModel, frozen=True, extra="forbid"):
    """Every stage's config, in pipeline order (`pretrain` is the `pretrain` flow's)."""

    runner: RunnerConfig = RunnerConfig()
    crawl: CrawlConfig = CrawlConfig()
    ingest: IngestConfig = IngestConfig()
    url_filter: UrlFilterConfig = UrlFilterConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    exact_dedup: ExactDedupConfig = ExactDedupConfig()
    minhash: MinhashConfig = MinhashConfig()
    langid: LangIdConfig = LangIdConfig()
    quality: QualityConfig = QualityConfig()
    decontam: DecontamConfig = DecontamConfig()
    augment: AugmentConfig = AugmentConfig()
    shards: ShardsConfig = ShardsConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    export: ExportConfig = ExportConfig()
    pretrain: PretrainConfig = PretrainConfig()


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {dotted!r}: {key!r} is not a section")
        tree = node
    tree[leaf] = value


def _parse_assignment(assignment: str) -> tuple[str, Any]:
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML ({e.problem})") from e


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections")
    return data


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown config key: {key}"
    return f"invalid config value for {key}: {first['msg']} (got {first.get('input')!r})"


def load_config(
    path: Path | None = None, sets: list[str] = (), env: Mapping[str, str] | None = None
) -> PipelineConfig:
    """Build the config from a YAML file, `PIPE_*` environment variables and `--set` pairs.

    Raises:
        ConfigError: naming the file, key or value that is wrong.
    """
    tree = _read_yaml(path) if path is not None else {}
    for name, raw in sorted((env or {}).items()):
        if name.startswith(ENV_PREFIX):
            _set(tree, name[len(ENV_PREFIX) :].lower().replace("__", "."), yaml.safe_load(raw))
    return _validate(tree, sets)


def _validate(tree: dict[str, Any], sets: list[str]) -> PipelineConfig:
    for assignment in sets:
        _set(tree, *_parse_assignment(assignment))
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None


# What `refilter` may change: the quality stage but what its signals depend on, decontamination.
REFILTER_SECTIONS = {"quality", "decontam", "runner"}


def refilter_config(finished: dict[str, Any], sets: list[str]) -> PipelineConfig:
    """The config of a finished run (its manifest's `config`) with `--set` pairs applied.

    Raises:
        ConfigError: when a pair changes anything but the quality thresholds (or the runner).
    """
    old = PipelineConfig.model_validate(finished)
    new = _validate(old.model_dump(mode="json"), sets)
    for section in PipelineConfig.model_fields:
        if section not in REFILTER_SECTIONS and getattr(new, section) != getattr(old, section):
            raise ConfigError(
                f"refilter re-applies quality thresholds and decontamination only; {section}.* "
                "changed: run prepare"
            )
    if new.quality.signal_key() != old.quality.signal_key() or not new.quality.enabled:
        raise ConfigError(
            "refilter re-applies quality thresholds only; quality.model, quality.stop_words, "
            "quality.bad_words_ignore and quality.enabled change the signals: run prepare"
        )
    return new


RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# What every recipe of an ablation shares, so their models are compared on equal terms.
SHARED_SECTIONS = ("tokenize", "pretrain")


class Recipes(BaseModel, frozen=True):
    """An ablation: the inputs, and each recipe's whole config (the base with its overlay)."""

    inputs: list[str]
    configs: dict[str, PipelineConfig]
    eval: list[str] = []  # evaluation texts: every recipe's evaluation set, kept out of training


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def load_recipes(path: Path, sets: list[str] = ()) -> Recipes:
    """Read an ablation's recipes file (see README, "Comparing data recipes").

    `inputs` (URIs as `--input` takes them; paths are relative to the recipes file), `base` (a
    config file, relative to the recipes file), `set` (`--set` pairs on the base) and
    `recipes` (name -> config overlay, a nested mapping), and `eval`: texts (URIs) that are
    every model's evaluation set and an evaluation set `decontam` removes from every recipe.
    `sets` are more `--set` pairs on the base, from the command line.

    Raises:
        ConfigError: naming the recipe and the key that is wrong, or a recipe that changes
            what all recipes share (tokenize, pretrain).
    """
    spec = _read_yaml(path)
    unknown = set(spec) - {"inputs", "base", "set", "recipes", "eval"}
    if unknown:
        raise ConfigError(f"recipes file {path}: unknown key {sorted(unknown)[0]!r}")
    recipes = spec.get("recipes") or {}
    if not isinstance(recipes, dict) or len(recipes) < 2:
        raise ConfigError(f"recipes file {path}: `recipes` must map two or more names to overlays")

    def located(uris: list[str]) -> list[str]:  # relative to the recipes file
        return [u if "://" in u else os.path.normpath(path.parent / u) for u in map(str, uris)]

    base = _read_yaml(path.parent / spec["base"]) if spec.get("base") else {}
    evals = located(spec.get("eval") or [])
    if evals:  # decontaminated from every recipe
        base.setdefault("decontam", {}).setdefault("eval_sets", {})["eval"] = evals
    base_cfg = _validate(base, [*spec.get("set", []), *sets])
    tree = base_cfg.model_dump(mode="json")
    configs = {}
    for name, overlay in recipes.items():
        if not RECIPE_NAME.fullmatch(str(name)):
            raise ConfigError(f"recipe {name!r}: use letters, digits, '.', '_' and '-'")
        try:
            cfg = _validate(_merge(tree, overlay or {}), [])
        except ConfigError as e:
            raise ConfigError(f"recipe {name!r}: {e}") from None
        for section in SHARED_SECTIONS:
            if getattr(cfg, section) != getattr(base_cfg, section):
                raise ConfigError(f"recipe {name!r} changes {section}: every recipe shares it; "
                                  "set it in the base")  # fmt: skip
        configs[str(name)] = cfg
    return Recipes(inputs=located(spec.get("inputs") or []), configs=configs, eval=evals)
