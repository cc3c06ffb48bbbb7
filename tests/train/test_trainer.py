import math

import pytest
import torch

from train.checkpoint import CheckpointError, LATEST, load_checkpoint
from train.config import load_config
from train.synthetic import SyntheticData
from train.trainer import EMA, Trainer, lr_factor

TINY = [
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


def tiny_config(tmp_path, *extra):
    return load_config(None, [*TINY, f"output_dir={tmp_path / 'run'}", *extra])


def test_lr_schedule_warmup_then_poly():
    assert lr_factor(0, 4, 10, 0.9) == pytest.approx(0.25)
    assert lr_factor(3, 4, 10, 0.9) == pytest.approx(1.0)
    assert lr_factor(4, 4, 10, 0.9) == pytest.approx(1.0)
    assert lr_factor(7, 4, 10, 0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(10, 4, 10, 0.9) == 0.0


def test_ema_follows_weights_with_warmup_decay():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.9)
    torch.nn.init.ones_(net.weight)
    ema.update(net)  # effective decay min(0.9, 2 / 11)
    assert ema.shadow["weight"].item() == pytest.approx(1 - 2 / 11)


def test_train_steps_decrease_the_loss_on_a_fixed_batch(tmp_path):
    cfg = tiny_config(tmp_path, "optim.ema_decay=null")
    data = SyntheticData(cfg.data)
    trainer = Trainer(cfg, data, resume=False)
    batch = next(data.train_batches(0, 1, 0))
    losses = [trainer.train_step(batch)["loss"] for _ in range(5)]
    assert losses[-1] < losses[0]
    assert trainer.step == 5


def _same_state(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.equal(a, b)
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.slow
def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    cfg = tiny_config(tmp_path)
    data = SyntheticData(cfg.data)
    trainer = Trainer(cfg, data, resume=False)
    batches = data.train_batches(0, 1, 0)
    for _ in range(2):
        trainer.train_step(next(batches))
    trainer.save(LATEST)
    restored = Trainer(cfg, data, resume=True)
    assert restored.resumed and restored.step == 2
    assert _same_state(trainer.net.state_dict(), restored.net.state_dict())
    assert _same_state(trainer.optimizer.state_dict(), restored.optimizer.state_dict())
    assert _same_state(trainer.ema.shadow, restored.ema.shadow)
    assert restored.scheduler.get_last_lr() == trainer.scheduler.get_last_lr()
    # The next step is identical too (same data, same state).
    nxt = next(data.train_batches(0, 1, 0, start_step=2))
    assert trainer.train_step(nxt)["loss"] == restored.train_step(nxt)["loss"]


def test_refuses_to_resume_into_a_different_config(tmp_path):
    cfg = tiny_config(tmp_path)
    data = SyntheticData(cfg.data)
    Trainer(cfg, data, resume=False).save(LATEST)
    changed = tiny_config(tmp_path, "optim.lr=0.5")
    with pytest.raises(CheckpointError, match="refusing to resume"):
        Trainer(changed, data, resume=True)
    assert Trainer(changed, data, resume=True, allow_config_change=True).resumed


@pytest.mark.slow
def test_fit_validates_and_writes_best_and_png(tmp_path):
    cfg = tiny_config(tmp_path, "optim.total_steps=2", "validation.every_steps=2", "validation.png_cases=1",
                      "log_every_steps=1")
    data = SyntheticData(cfg.data, num_val=1)
    summary = Trainer(cfg, data, resume=False).fit()
    out = tmp_path / "run"
    assert summary["step"] == 2 and 0.0 <= summary["val_dice_lesion"] <= 1.0
    assert (out / "best.pt").is_file() and (out / "val_png" / "step_0000002.png").is_file()
    assert load_checkpoint(out / LATEST)["step"] == 2
    kinds = [line.split('"kind": "')[1][:3] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("val") == 1 and kinds.count("tra") == 2
