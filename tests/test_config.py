import os

import pytest
import yaml
from helpers import ROOT, V1, V2

from imginav_core import ConfigError, load_config
from imginav_core.config import (
    ADDED_KEYS,
    CONFIG_VERSION,
    config_from_dict,
    defaults_note,
    parse_overrides,
    schema_keys,
    write_config,
)
from imginav_core.losses import TERMS


def test_experiments_inherit_the_architecture_and_set_only_what_they_vary():
    for path, variational, kld in ((V1, False, 0.0), (V2, True, 1e-4)):
        own = yaml.safe_load(path.read_text())
        assert set(own) == {"inherit", "name", "model", "loss"}
        assert own["model"] == {"variational": variational} and own["loss"] == {"kld": kld}
        cfg = load_config(path)
        assert (
            cfg.model.latent_channels,
            cfg.model.base_channels,
            cfg.model.downsampling_steps,
            cfg.model.norm_groups,
        ) == (16, 32, 4, 8)
        assert (cfg.loss.mse, cfg.loss.segmentation, cfg.loss.classification, cfg.loss.kld) == (1.0, 0.05, 0.01, kld)
        assert (
            cfg.training.batch_size,
            cfg.training.epochs,
            cfg.training.lr,
            cfg.training.weight_decay,
            cfg.training.seed,
        ) == (16, 10, 1e-4, 0.01, 42)
        assert (cfg.training.early_stopping.patience, cfg.training.early_stopping.min_delta) == (3, 1e-4)
    # the architecture is written once in configs/
    mentions = [p for p in (ROOT / "configs").rglob("*.yaml") if "latent_channels" in p.read_text()]
    assert [p.name for p in mentions] == ["phase1_1_architecture.yaml"]


def test_overrides_by_dotted_key():
    cfg = load_config(V2, {"training.epochs": 1, "data.resolution": 64, "training.early_stopping.patience": 5})
    assert (cfg.training.epochs, cfg.data.resolution, cfg.training.early_stopping.patience) == (1, 64, 5)
    assert cfg.training.lr == 1e-4  # untouched


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown override key 'training.epoch'.*did you mean 'training.epochs'"):
        load_config(V1, {"training.epoch": 3})


def test_unknown_key_in_a_file_is_an_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(f"inherit: {V1}\ntraining:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown config key 'training.learning_rate'.*'training.lr'"):
        load_config(path)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("training.epochs", "ten", r"'training.epochs' must be int"),
        ("model.variational", "yes", r"'model.variational' must be bool"),
        ("loss.kld", -1e-4, r"'loss.kld' = -0.0001: loss weights must be >= 0"),
        ("data.resolution", 100, r"'data.resolution' = 100: must be a positive multiple of .* 16"),
        ("name", "../escape", r"'name'.*letters, digits"),
        ("training.device", "tpu", r"'training.device' = 'tpu' is not one of"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(V1, {key: value})


def test_missing_file_is_named():
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(ROOT / "configs/nope.yaml")


def test_on_off_switches_read_as_words():
    # YAML 1.1 reads `off` as False: `--set training.compile=off` must still mean "off"
    cfg = load_config(V1, parse_overrides(["training.compile=off", "training.channels_last=on", "training.amp=off"]))
    assert (cfg.training.compile, cfg.training.channels_last, cfg.training.amp) == ("off", "on", "off")


@pytest.mark.parametrize(
    "text,value", [("1e-3", 1e-3), ("3e-4", 3e-4), ("1E-4", 1e-4), ("-2e+1", -20.0), ("1.0e-4", 1e-4), ("0.0001", 1e-4)]
)
def test_exponent_floats_are_numbers_in_set_and_in_yaml_files(tmp_path, text, value):
    """What a learning-rate or KL sweep types: PyYAML alone reads `1e-3` as the string '1e-3'."""
    assert parse_overrides([f"training.lr={text}"]) == {"training.lr": value}
    path = tmp_path / "sweep.yaml"
    path.write_text(f"inherit: {V2}\nname: kl_sweep\nloss:\n  kld: {text.lstrip('-')}\n")
    assert load_config(path).loss.kld == abs(value)


def test_strings_that_only_look_like_exponents_stay_strings():
    assert parse_overrides(["name=e5", "data.manifest=1e5x.csv"]) == {"name": "e5", "data.manifest": "1e5x.csv"}


def test_a_kl_weight_on_a_deterministic_encoder_is_an_error():
    with pytest.raises(ConfigError, match=r"'loss.kld' = 0.001: a KL weight needs a variational encoder"):
        load_config(V1, parse_overrides(["loss.kld=1e-3"]))
    assert load_config(V2, parse_overrides(["loss.kld=1e-3"])).loss.kld == 1e-3
    assert load_config(V1, {"model.variational": True, "loss.kld": 1e-3}).model.variational


def test_the_split_fractions_default_to_70_10_20_and_must_leave_layouts_to_train_on():
    data = load_config(V1).data
    assert (data.val_fraction, data.test_fraction, data.split_seed) == (0.1, 0.2, 42)
    assert load_config(V2, {"data.test_fraction": 0.25}).data.test_fraction == 0.25
    with pytest.raises(ConfigError, match=r"'data.test_fraction' = 0.0: must be strictly between 0 and 1"):
        load_config(V1, {"data.test_fraction": 0.0})
    with pytest.raises(ConfigError, match=r"'data.test_fraction' = 0.5: data.val_fraction \+ data.test_fraction"):
        load_config(V1, {"data.val_fraction": 0.5, "data.test_fraction": 0.5})
    with pytest.raises(ConfigError, match=r"missing config key 'data.test_fraction'"):
        values = load_config(V1).to_dict()
        del values["data"]["test_fraction"]
        config_from_dict(values)


# ---- versions: a run's config.yaml written by older code stays readable ----------------------------

# A run's config.yaml exactly as the code before config versions wrote it (Config.save of
# configs/phase1_2/V2_vae_light.yaml, as the notebooks train it): no version, no keys added since.
OLD_RUN_CONFIG = """\
name: phase1_2_AE_V2_vae_light_seed42
phase: phase1_2_vae_test
output_root: /data/imginav/outputs
model:
  latent_channels: 16
  base_channels: 32
  downsampling_steps: 4
  norm_groups: 8
  activation: silu
  variational: true
data:
  manifest: ''
  resolution: 512
  synthetic_samples: 2000
  synthetic_seed: 0
  val_fraction: 0.1
  test_fraction: 0.2
  split_seed: 42
  drop_empty: true
  cache_dir: ''
  num_workers: 2
  skip_broken: false
training:
  epochs: 10
  batch_size: 16
  lr: 0.0001
  weight_decay: 0.01
  seed: 42
  device: auto
  amp: auto
  channels_last: auto
  compile: auto
  sample_interval: 1
  early_stopping:
    patience: 3
    min_delta: 0.0001
loss:
  mse: 1.0
  segmentation: 0.05
  classification: 0.01
  kld: 0.0001
"""


def test_a_run_config_of_older_code_loads_with_its_documented_defaults_said(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_RUN_CONFIG)
    cfg = load_config(path)
    assert cfg.written_version == 1 and cfg.training.early_stopping.monitor == "total"  # what older code selected on
    assert cfg.defaulted == {"training.early_stopping.monitor": "total"}
    assert cfg.output_root == "/data/imginav/outputs" and cfg.loss.kld == 1e-4
    note = defaults_note(cfg, "phase1_2_AE_V2_vae_light_seed42")
    assert note.startswith("run phase1_2_AE_V2_vae_light_seed42 was written by older code (config version 1): ")
    assert "training.early_stopping.monitor taken as its documented default 'total' (older code picked" in note
    # the record is no setting: written again, the config is a current one that says what it selects on
    assert cfg.to_dict()["version"] == CONFIG_VERSION and "defaulted" not in cfg.to_dict()
    write_config(cfg, tmp_path / "again.yaml")
    again = load_config(tmp_path / "again.yaml")
    assert again == cfg and again.defaulted == {} and defaults_note(again) == ""
    # every key added since version 1 has its version, default and meaning; today's configs state them all
    assert all(added.version <= CONFIG_VERSION and added.meaning for added in ADDED_KEYS.values())
    assert set(ADDED_KEYS) <= set(schema_keys()) and load_config(V1).defaulted == {}


def test_an_older_config_lacking_a_key_it_had_is_refused_naming_it(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_RUN_CONFIG.replace("  test_fraction: 0.2\n", ""))
    with pytest.raises(ConfigError, match=r"config.yaml: missing config key 'data.test_fraction'"):
        load_config(path)


def test_an_unknown_key_is_refused_in_an_older_config_too(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_RUN_CONFIG.replace("  seed: 42\n", "  seed: 42\n  warmup: 5\n"))
    with pytest.raises(ConfigError, match=r"config.yaml: unknown config key 'training.warmup'"):
        load_config(path)


def test_a_current_config_lacking_a_new_key_is_refused_naming_it(tmp_path):
    values = load_config(V2).to_dict()
    del values["training"]["early_stopping"]["monitor"]
    with pytest.raises(ConfigError, match=r"x.yaml: missing config key 'training.early_stopping.monitor'"):
        config_from_dict(values, source="x.yaml")


def test_a_config_newer_than_the_code_is_refused_naming_the_file_and_both_versions(tmp_path):
    path = tmp_path / "future.yaml"
    path.write_text(f"version: {CONFIG_VERSION + 1}\n" + OLD_RUN_CONFIG)
    with pytest.raises(
        ConfigError, match=rf"future.yaml: config version {CONFIG_VERSION + 1} is newer .* \(version {CONFIG_VERSION}\)"
    ):
        load_config(path)
    path.write_text("version: two\n" + OLD_RUN_CONFIG)
    with pytest.raises(ConfigError, match=r"future.yaml: 'version' must be a whole number"):
        load_config(path)


def test_the_monitor_takes_only_the_quantities_the_losses_log():
    assert load_config(V1).training.early_stopping.monitor == "reconstruction"
    with pytest.raises(ConfigError, match=r"'training.early_stopping.monitor' = 'val_mse' is not one of"):
        load_config(V1, {"training.early_stopping.monitor": "val_mse"})


# ---- paths: relative to the file that states them; one writer ------------------------------------


def test_relative_paths_in_a_file_are_relative_to_that_files_folder(tmp_path, monkeypatch):
    assert load_config(V1).output_root == str(ROOT / "outputs")  # common.yaml's ../../outputs, from anywhere
    (tmp_path / "study" / "data").mkdir(parents=True)
    (tmp_path / "study" / "configs").mkdir()
    parent = tmp_path / "study" / "configs" / "base.yaml"
    parent.write_text(f"inherit: {V1}\ndata:\n  manifest: ../data/layouts.csv\n  cache_dir: cache\n")
    child = tmp_path / "study" / "run.yaml"
    child.write_text("inherit: configs/base.yaml\noutput_root: out\n")
    monkeypatch.chdir(tmp_path)  # the current directory is neither file's folder
    cfg = load_config(child)
    assert cfg.output_root == str(tmp_path / "study" / "out")  # the child's folder
    assert cfg.data.manifest == str(tmp_path / "study" / "data" / "layouts.csv")  # the parent's folder
    assert cfg.data.cache_dir == str(tmp_path / "study" / "configs" / "cache")
    assert load_config(V1).data.cache_dir == ""  # the empty string: still the default, OUTPUT_ROOT/cache
    # given in code or on a command line: relative to the current directory
    given = load_config(child, {"output_root": "elsewhere", "data.manifest": "../m.csv"})
    assert given.output_root == str(tmp_path / "elsewhere") and given.data.manifest == os.path.join(
        os.path.dirname(tmp_path), "m.csv"
    )


def test_the_writer_writes_paths_under_the_output_root_relative_to_the_file(tmp_path):
    root = tmp_path / "outputs"
    cfg = load_config(
        V2, {"output_root": str(root), "data.cache_dir": str(root / "cache"), "data.manifest": "/data/layouts.csv"}
    )
    path = root / "experiments" / cfg.name / "config.yaml"
    write_config(cfg, path)
    text = path.read_text()
    written = yaml.safe_load(text)
    assert list(written)[:2] == ["version", "name"] and written["version"] == CONFIG_VERSION
    assert written["output_root"] == "../.." and written["data"]["cache_dir"] == "../../cache"
    assert written["data"]["manifest"] == "/data/layouts.csv"  # not under the output root: absolute
    assert written["training"]["device"] == "auto" and written["loss"] == {t.name: cfg.loss[t.name] for t in TERMS}
    assert load_config(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # whole: no temporary left
    # a file written outside the output root names it absolutely (the two do not move together)
    write_config(cfg, tmp_path / "elsewhere" / "x.yaml")
    assert yaml.safe_load((tmp_path / "elsewhere" / "x.yaml").read_text())["output_root"] == str(root)


def test_the_loss_section_has_one_weight_per_registered_term(tmp_path):
    assert [k for k in schema_keys() if k.startswith("loss.")] == [f"loss.{t.name}" for t in TERMS]
    cfg = load_config(V2)
    assert cfg.loss.kld == cfg.get("loss.kld") == cfg.loss["kld"] == 1e-4
    path = tmp_path / "x.yaml"
    path.write_text(f"inherit: {V1}\nloss:\n  kdl: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'loss.kdl' \(did you mean 'loss.kld'\?\).*mse, segm"):
        load_config(path)
    values = cfg.to_dict()
    del values["loss"]["segmentation"]
    with pytest.raises(ConfigError, match=r"missing config key 'loss.segmentation'"):
        config_from_dict(values)
