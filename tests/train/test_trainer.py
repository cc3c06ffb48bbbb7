import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.checkpoint import BEST, LATEST, CheckpointError, load_checkpoint
from train.config import load_config
from train.synthetic import SyntheticData
from train.trainer import EMA, Trainer, lr_factor, report_weight_factor

TINY = [
    "cpu_threads=1",
    "data.source=synthetic",
    "data.classes=[liver, kidney, liver_lesion, kidney_lesion]",
    "data.patch_size=[16, 16, 16]",
    "model.filters=[4, 8, 16]",
    "optim.total_steps=6",
    "optim.warmup_steps=1",
    "optim.lr=0.01",
    "validation.every_steps=1000",
    "validation.checkpoint_every_steps=2",
]


def tiny_config(out, *extra):
    return load_config(None, [*TINY, f"output_dir={out}", *extra])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One short run shared by the tests below: 4 of 6 scheduled steps, validated at steps 2 and 4."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("fit") / "run"
    cfg = tiny_config(out, "validation.every_steps=2", "validation.png_cases=1", "log_every_steps=1")
    data = SyntheticData(cfg.data, volume_shape=(16, 16, 16), num_val=1)
    trainer = Trainer(cfg, data, resume=False)
    summary = trainer.fit(max_steps=4)
    yield {"cfg": cfg, "data": data, "trainer": trainer, "summary": summary, "out": out}
    torch.set_num_threads(threads)


def test_lr_schedule_warmup_then_poly():
    assert lr_factor(0, 4, 10, 0.9) == pytest.approx(0.25)
    assert lr_factor(3, 4, 10, 0.9) == pytest.approx(1.0)
    assert lr_factor(4, 4, 10, 0.9) == pytest.approx(1.0)
    assert lr_factor(7, 4, 10, 0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(10, 4, 10, 0.9) == 0.0


def test_report_weight_is_off_then_ramps_linearly():
    assert [report_weight_factor(s, 3, 4) for s in range(8)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert report_weight_factor(0, 0, 0) == 1.0
    assert report_weight_factor(5, 6, 0) == 0.0 and report_weight_factor(6, 6, 0) == 1.0


def test_train_step_applies_the_report_weight_schedule(tmp_path):
    cfg = tiny_config(tmp_path / "run", "loss.report_weight=0.5", "optim.report_start_step=1",
                      "optim.report_ramp_steps=2")
    data = SyntheticData(cfg.data)
    trainer = Trainer(cfg, data, resume=False)
    batches = data.train_batches(0, 1, 0)
    weights = []
    for _ in range(4):
        weights.append(trainer.train_step(next(batches))["report_weight"])
        assert trainer.loss_fn.cfg.report_weight == weights[-1]
    assert weights == [0.0, 0.25, 0.5, 0.5]
    assert cfg.loss.report_weight == 0.5  # the run's config is left as written


def test_early_report_channels_keep_the_full_weight_and_the_schedule_moves_the_others(tmp_path):
    cfg = tiny_config(tmp_path / "run", "loss.report_weight=0.5", "optim.report_start_step=1",
                      "optim.report_ramp_steps=2", "loss.report_early_channels=[2]")
    data = SyntheticData(cfg.data)
    trainer = Trainer(cfg, data, resume=False)
    batches = data.train_batches(0, 1, 0)
    seen = []
    for _ in range(4):
        trainer.train_step(next(batches))
        seen.append((trainer.loss_fn.cfg.report_weight, trainer.loss_fn.cfg.report_late_factor))
    assert seen == [(0.5, 0.0), (0.5, 0.5), (0.5, 1.0), (0.5, 1.0)]
    assert trainer.loss_fn.cfg.report_factor(2) == 1.0 and trainer.loss_fn.cfg.report_factor(3) == 1.0
    with pytest.raises(ValueError, match="report_early_channels"):
        tiny_config(tmp_path / "bad", "loss.report_early_channels=[0]")  # channel 0 is the liver, not a lesion


def test_ema_follows_weights_with_warmup_decay():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.9)
    torch.nn.init.ones_(net.weight)
    ema.update(net)  # effective decay min(0.9, 2 / 11)
    assert ema.shadow["weight"].item() == pytest.approx(1 - 2 / 11)


def test_train_steps_decrease_the_loss_on_a_fixed_batch(tmp_path):
    cfg = tiny_config(tmp_path / "run", "optim.ema_decay=null")
    data = SyntheticData(cfg.data)
    trainer = Trainer(cfg, data, resume=False)
    assert torch.get_num_threads() == 1  # cpu_threads applied
    batch = next(data.train_batches(0, 1, 0))
    losses = [trainer.train_step(batch)["loss"] for _ in range(5)]
    assert losses[-1] < losses[0]
    assert trainer.step == 5


def test_fit_validates_and_writes_best_and_png(fitted):
    out, summary = fitted["out"], fitted["summary"]
    assert summary["step"] == 4 and 0.0 <= summary["val_dice_lesion"] <= 1.0
    assert (out / BEST).is_file()
    assert sorted(p.name for p in (out / "val_png").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    assert load_checkpoint(out / LATEST)["step"] == 4  # written at the max_steps stop
    assert load_checkpoint(out / BEST)["best_metric"] == fitted["trainer"].best_metric
    kinds = [line.split('"kind": "')[1][:3] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("val") == 2 and kinds.count("tra") == 4


def _same_state(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.equal(a, b)
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def test_refuses_to_resume_into_a_different_config(fitted):
    changed = tiny_config(fitted["out"], "optim.lr=0.5")
    with pytest.raises(CheckpointError, match="refusing to resume"):
        Trainer(changed, fitted["data"], resume=True)
    assert Trainer(changed, fitted["data"], resume=True, allow_config_change=True).resumed


def test_checkpoint_round_trip_is_bit_identical(fitted):
    # Last: it steps the shared trainer on.
    trainer, data = fitted["trainer"], fitted["data"]
    restored = Trainer(fitted["cfg"], data, resume=True)
    assert restored.resumed and restored.step == 4
    assert _same_state(trainer.net.state_dict(), restored.net.state_dict())
    assert _same_state(trainer.optimizer.state_dict(), restored.optimizer.state_dict())
    assert _same_state(trainer.ema.shadow, restored.ema.shadow)
    assert restored.scheduler.get_last_lr() == trainer.scheduler.get_last_lr() != [0.0]
    assert restored.best_metric == trainer.best_metric
    # The next two steps are identical too: same data, same weights and optimizer moments.
    a, b = data.train_batches(0, 1, 0, start_step=4), data.train_batches(0, 1, 0, start_step=4)
    for _ in range(2):
        assert trainer.train_step(next(a))["loss"] == restored.train_step(next(b))["loss"]
    assert _same_state(trainer.net.state_dict(), restored.net.state_dict())



@pytest.mark.parametrize("disabled", [False, True])
def test_progress_bar_follows_tqdm_disable(tmp_path, disabled):
    # tqdm reads TQDM_* variables when it is imported, so the run needs a fresh interpreter.
    script = (
        "import sys; sys.path[:0] = [sys.argv[2], sys.argv[3]]\n"
        "from test_trainer import tiny_config\n"
        "from train.synthetic import SyntheticData\n"
        "from train.trainer import Trainer\n"
        "cfg = tiny_config(sys.argv[1], 'optim.total_steps=2')\n"
        "Trainer(cfg, SyntheticData(cfg.data, volume_shape=(16, 16, 16), num_val=0), resume=False).fit()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    if disabled:
        env["TQDM_DISABLE"] = "1"
    tests_dir, repo = Path(__file__).parent, Path(__file__).parents[2]
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), str(tests_dir), str(repo)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("train:" in done.stderr) != disabled
