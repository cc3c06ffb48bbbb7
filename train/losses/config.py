"""Configuration of the training losses (one pydantic model, documented defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LossConfig(BaseModel):
    """Weights, margins and constants of the segmentation + report-supervision losses.

    Physical sizes are in mm / mm3 and are converted with each crop's voxel spacing; HU are Hounsfield units.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lesion_channels: list[int] = Field(
        default_factory=list,
        description="Output channels of lesion classes. Report groups must point to one of them (checked when "
        "the list is non-empty).",
    )

    # --- combination -------------------------------------------------------------------------------------
    seg_weight: float = Field(1.0, ge=0, description="Weight of the masked BCE + Dice segmentation loss.")
    seg_dice_weight: float = Field(1.0, ge=0, description="Weight of the Dice part inside the segmentation loss.")
    lesion_pos_weight: float = Field(
        1.0, ge=1,
        description="Weight of the positive voxels in the lesion channels' BCE (BCEWithLogitsLoss pos_weight). "
        "Tumours fill ~0.1 % of a crop, so from a background-prior start the sigmoid saturates and plain "
        "BCE + Dice take hundreds of steps to raise any lesion voxel; 10-20 starts lesion learning several "
        "times sooner on the phantoms, at the price of more false-positive voxels early on. 1: off.",
    )
    seg_on_report_cts: bool = Field(
        True,
        description="Apply the segmentation loss to CTs without voxel annotations (has_mask False) wherever "
        "unknown_mask is False (organ pseudo-labels, lesion channels known negative). False: skip those CTs.",
    )
    report_weight: float = Field(0.1, ge=0, description="lambda: weight of all report losses (paper: 0.1).")
    report_early_channels: list[int] = Field(
        default_factory=list,
        description="Lesion channels whose report losses run at full weight from the first step, whatever "
        "optim.report_start_step and report_ramp_steps say: a lesion type no voxel mask annotates learns only from "
        "reports, and a masks-first stage never teaches it (docs/science.md, no-mask protocol). Other channels "
        "follow the schedule.",
    )
    report_late_factor: float = Field(
        1.0, ge=0, le=1,
        description="Factor of the report losses of the channels not in report_early_channels. Set by the trainer "
        "at each step from the report schedule when report_early_channels is set (report_weight then stays full).",
    )
    volume_weight: float = Field(1.0, ge=0, description="Weight of the Volume Loss inside the report losses.")
    ball_bce_weight: float = Field(1.0, ge=0, description="Weight of the Ball Loss BCE term.")
    ball_dice_weight: float = Field(1.0, ge=0, description="Weight of the Ball Loss Dice term.")
    attenuation_weight: float = Field(0.1, ge=0, description="Weight of the Attenuation Loss.")
    deep_supervision_weights: list[float] | None = Field(
        None,
        description="Weight per output head (first = full resolution). None: equal weights summing to 1 "
        "(0.5 / 0.5 for two heads, as in the paper).",
    )
    volume_heads: list[int] = Field(
        default_factory=lambda: [-1],
        description="Heads that get the Volume Loss (Python indices; -1 = last, i.e. the auxiliary head of a "
        "two-head model and the only head of a one-head model).",
    )
    ball_heads: list[int] = Field(
        default_factory=lambda: [0], description="Heads that get the Ball and Attenuation Losses (0 = final)."
    )

    # --- masks -------------------------------------------------------------------------------------------
    group_margin_mm: float = Field(
        15.0,
        ge=0,
        description="Growth of each reported organ / sub-segment mask (imperfect borders, exophytic tumours); "
        "the reference grows by about 15 voxels of 1 mm.",
    )
    unknown_dilation_mm: float = Field(
        2.0, ge=0, description="Safety margin added around unknown voxels for the segmentation loss."
    )

    # --- Volume Loss -------------------------------------------------------------------------------------
    volume_tolerance: float = Field(
        0.2, ge=0, lt=1, description="Zero-loss band [(1 - tol) V, (1 + tol) V] around the reported volume V."
    )
    volume_smooth_mm3: float = Field(
        10.0,
        gt=0,
        description="Small-tumour constant E of the log-band loss log((lo + E) / (P + E)). It caps the "
        "per-voxel gradient at 1/E and sets how loud small tumours are: the reference's dice-like form with "
        "E = 500 voxels is nearly silent below ~1 cm; 10 mm3 (a 2.7 mm sphere) keeps 5 mm tumours supervised.",
    )
    presence_min_diameter_mm: float = Field(
        5.0,
        gt=0,
        description="Tumours without a reported size add the volume of a sphere of this diameter to the lower "
        "edge of the band (and remove the upper edge): presence-only supervision.",
    )
    count_prior_diameter_mm: float | None = Field(
        None,
        gt=0,
        description="If set, tumours without a size are placed by the Ball Loss as spheres of this diameter; "
        "None: they get presence-only supervision (Volume Loss lower bound, no Ball Loss negatives).",
    )

    # --- Ball Loss ---------------------------------------------------------------------------------------
    ball_search_margin: float = Field(
        0.2,
        ge=0,
        description="The pseudo-mask is ranked inside a ball of diameter (1 + margin) * largest reported "
        "diameter, centred where an equal-volume ball best fits the prediction.",
    )
    ball_positive_fraction: float = Field(
        0.5, gt=0, le=1, description="Positives = this fraction of the reported volume, most confident first. "
        "A confident core: every organ voxel among the positives teaches 'organ = lesion'. On the science pool "
        "(benchmarks/diag_placement.py: flat prediction, attenuation prior) 90 % of the positives lie on the true "
        "tumour at 0.5, 64 % at 0.9.",
    )
    ball_bce_normalization: Literal["class", "crop"] = Field(
        "class",
        description="Denominator of the Ball BCE. class: each sum by the size of its own set, so one positive voxel "
        "weighs |negatives| / |positives| (~20-200x) a negative one. crop: the weighted positive and the negative "
        "sums are both divided by the crop's voxel count (the reference's masked mean). Measured on phantoms, one "
        "run each: the make-train demo reaches validation lesion Dice 0.131 with class and 0.011 with crop; in the "
        "science benchmark class made every test CT positive and crop did not (configs/science uses crop).",
    )
    ball_bce_normalization_early: Literal["class", "crop"] | None = Field(
        None, description="Ball BCE denominator of the report_early_channels (None: ball_bce_normalization). With no "
        "voxel example a crop-normalised Ball BCE starves a channel of positives.",
    )
    ball_guard_fraction: float = Field(
        1.25, ge=1, description="The most confident (fraction * volume) voxels, grown by the ignore band, are "
        "not pushed to zero.",
    )
    ball_ignore_band_mm: float = Field(3.0, ge=0, description="Growth of the guard region (ignored band), mm.")
    ball_rank_decay: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Rank weights of the positives decay geometrically from 1 (most confident) to this value "
        "(least confident), then are normalised to mean 1; 1 disables rank weighting.",
    )
    ball_kernel_sigma_factor: float | None = Field(
        1.5, gt=0, description="Gaussian centre weighting of the placement kernel (sigma = factor * radius)."
    )

    ball_attenuation_prior: bool = Field(
        True,
        description="Place tumours on probability x attenuation fit: where the report says hypo (hyper), voxels "
        "darker (brighter) than the organ's median HU by attenuation_margin_hu count most. Without it an immature "
        "network's hot spots in normal tissue become the pseudo-mask and the lesion channels learn the organ.",
    )
    ball_network_trust: float = Field(
        1.0, ge=0, le=1,
        description="Exponent of the probability in the placement map p^trust x attenuation prior (groups with a "
        "prior only): 1 = the reference's probability-led placement, 0 = the report's attenuation alone.",
    )
    ball_prior_softness_hu: float = Field(
        5.0, gt=0, description="Softness of the attenuation placement prior (HU per logit unit)."
    )
    ball_prior_min_tissue_hu: float = Field(
        -30.0, description="The placement prior is ~0 below this HU (fat and air around the organ, which the grown "
        "placement region reaches, are darker than any hypo-attenuating tumour)."
    )

    # --- Attenuation Loss --------------------------------------------------------------------------------
    attenuation_margin_hu: float = Field(
        10.0, ge=0, description="Required contrast delta (HU) between tumour and organ for hypo / hyper; "
        "allowed |contrast| for iso."
    )
    attenuation_scale_hu: float = Field(50.0, gt=0, description="Contrast errors are divided by this (HU).")
    attenuation_hu_window: tuple[float, float] = Field(
        (-150.0, 350.0), description="HU are clipped to this window so fat / air / bone outliers do not dominate."
    )

    @model_validator(mode="after")
    def _check(self) -> LossConfig:
        if self.deep_supervision_weights is not None and not self.deep_supervision_weights:
            raise ValueError("deep_supervision_weights: give at least one weight or None")
        if self.attenuation_hu_window[0] >= self.attenuation_hu_window[1]:
            raise ValueError("attenuation_hu_window: lower bound must be below the upper bound")
        stray = sorted(set(self.report_early_channels) - set(self.lesion_channels)) if self.lesion_channels else []
        if stray:
            raise ValueError(f"report_early_channels {stray} are not lesion channels {self.lesion_channels}")
        return self

    def report_factor(self, channel: int) -> float:
        """Factor of one lesion channel's report losses at this step (report_early_channels: 1)."""
        return 1.0 if channel in self.report_early_channels else self.report_late_factor

    def ball_normalization(self, channel: int) -> str:
        """The Ball BCE denominator of one lesion channel."""
        if channel in self.report_early_channels and self.ball_bce_normalization_early is not None:
            return self.ball_bce_normalization_early
        return self.ball_bce_normalization

    def head_weights(self, num_heads: int) -> list[float]:
        """Weights of ``num_heads`` output heads (raises if the configured list has another length)."""
        if self.deep_supervision_weights is None:
            return [1.0 / num_heads] * num_heads
        if len(self.deep_supervision_weights) != num_heads:
            raise ValueError(
                f"LossConfig.deep_supervision_weights has {len(self.deep_supervision_weights)} entries "
                f"but the network returned {num_heads} heads"
            )
        return list(self.deep_supervision_weights)
