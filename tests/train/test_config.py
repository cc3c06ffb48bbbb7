from pathlib import Path

import pytest

from train.config import ConfigError, load_config, parse_override


def test_overrides_use_the_same_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 0.01, total_steps: 10, warmup_steps: 2}\ndata: {source: synthetic}\n")
    cfg = load_config(path, ["optim.lr=1e-4", "data.patch_size=[16, 16, 16]"])
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.optim.total_steps == 10
    assert cfg.data.patch_size == (16, 16, 16)


def test_lesion_channels_come_from_classes():
    cfg = load_config(None, ["data.classes=[liver, kidney, liver_lesion, kidney_lesion]"])
    assert cfg.loss.lesion_channels == [2, 3]


def test_bad_field_names_file_and_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: {lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.lrr"):
        load_config(path)
    with pytest.raises(ConfigError, match="warmup_steps"):
        load_config(None, ["optim.total_steps=5", "optim.warmup_steps=5"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.lr")


def test_fingerprint_tracks_training_settings_only():
    base = load_config(None)
    assert load_config(None, ["output_dir=elsewhere"]).fingerprint() == base.fingerprint()
    assert load_config(None, ["cpu_threads=1"]).fingerprint() == base.fingerprint()
    assert load_config(None, ["optim.lr=0.5"]).fingerprint() != base.fingerprint()


@pytest.mark.parametrize("name", ["demo.yaml", "two_stage_1_masks.yaml", "two_stage_2_reports.yaml"])
def test_bundled_configs_load(name):
    cfg = load_config(Path(__file__).parents[2] / "configs" / name)
    assert cfg.data.lesion_channels == cfg.loss.lesion_channels != []
    assert all(p % 2 ** (len(cfg.model.filters) - 1) == 0 for p in cfg.data.patch_size)
