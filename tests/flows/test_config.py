import pytest

from flows.config import ConfigError, PipelineConfig, load_config


def test_defaults():
    cfg = load_config()
    assert cfg == PipelineConfig()
    assert cfg.langid.allow == () and cfg.minhash.enabled


def test_yaml_then_env_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("minhash:\n  threshold: 0.6\n  num_perm: 64\nlangid:\n  min_score: 0.3\n")
    env = {"PIPE_MINHASH__THRESHOLD": "0.7", "PIPE_LANGID__MIN_SCORE": "0.4", "HOME": "/x"}
    cfg = load_config(path, ["langid.min_score=0.5", "langid.allow=[en, zh]"], env)
    assert cfg.minhash.threshold == 0.7 and cfg.minhash.num_perm == 64
    assert cfg.langid.min_score == 0.5 and cfg.langid.allow == ("en", "zh")


def test_every_stage_but_ingest_and_shards_can_be_switched_off():
    sets = [
        f"{s}.enabled=false" for s in ("normalize", "exact_dedup", "minhash", "langid", "quality")
    ]
    cfg = load_config(sets=sets)
    assert not any(getattr(cfg, s.split(".")[0]).enabled for s in sets)
    with pytest.raises(ConfigError, match=r"unknown config key: ingest\.enabled"):
        load_config(sets=["ingest.enabled=false"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["minhash.thrshold=0.8"], "unknown config key: minhash.thrshold"),
        (["minhash.threshold=2"], "minhash.threshold"),
        (["minhash.bands=4"], "set both `bands` and `rows`"),
        (["nosuch.key=1"], "unknown config key: nosuch"),
        (["minhash"], "expected section.key=value"),
        (["langid.allow=[en"], "not valid YAML"),
    ],
)
def test_bad_keys_and_values_name_what_is_wrong(sets, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(sets=sets)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_shipped_configs_are_valid():
    from pathlib import Path

    for path in sorted(Path("infra/configs").glob("*.yaml")):
        load_config(path)
