"""What the trainer is given, built from the config: the data source and the loss module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from torch import nn

from train.config import TrainConfig
from train.data.volume import VolumeCase


class TrainingData(Protocol):
    """What the trainer needs from a data source."""

    classes: list[str]
    in_channels: int

    def fingerprint(self) -> str:
        """Hash of the cases and records used (stored in checkpoints)."""

    def train_batches(self, rank: int, world_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
        """Endless batches for this rank, starting at ``start_step``."""

    def val_cases(self) -> list[VolumeCase]:
        """Whole validation volumes."""


def build_data(config: TrainConfig) -> TrainingData:
    """The data source named by ``config.data.source``."""
    if config.data.source == "synthetic":
        from train.synthetic import SyntheticData

        return SyntheticData(config.data)
    from train.datasource import CaseData

    return CaseData.from_config(config.data, seed=config.seed)


def build_loss(config: TrainConfig) -> nn.Module:
    """The segmentation + report-supervision loss (train.losses)."""
    from train.losses import ReportSupervisionLoss

    return ReportSupervisionLoss(config.loss)
