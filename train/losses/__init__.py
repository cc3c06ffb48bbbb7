"""Training losses: masked segmentation loss and report supervision (Volume, Ball, Attenuation).

Pure tensor code: no file or database I/O, no prints, no imports from ``extract``.
"""

from train.losses.config import LossConfig
from train.losses.plan import TumorStatus
from train.losses.report import AttenuationLoss, BallLoss, ReportSupervisionLoss, VolumeLoss
from train.losses.targets import Attenuation, GroupState, ReportTargets

__all__ = [
    "Attenuation",
    "AttenuationLoss",
    "BallLoss",
    "GroupState",
    "LossConfig",
    "ReportSupervisionLoss",
    "ReportTargets",
    "TumorStatus",
    "VolumeLoss",
]
