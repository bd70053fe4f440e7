"""FusionLungNet's hybrid loss (paper §4.6, eq. 9-12) with deep supervision (eq. 10), built on ``monai.losses``."""

from __future__ import annotations

from typing import Sequence

import torch
from monai.losses import DeepSupervisionLoss, DiceLoss, FocalLoss, SSIMLoss
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["HybridLoss"]


class HybridLoss(_Loss):
    """``λ1·focal + λ2·SSIM + λ3·IoU`` on logits; a list of outputs (deep supervision) gives the plain sum
    ``L(refined) + Σ L(side)`` of the paper's eq. 10 (MONAI ``DeepSupervisionLoss`` with equal weights).

    Terms (each on sigmoid probabilities ``p`` of the logits, per channel):

    - focal (eq. 11): MONAI ``FocalLoss`` with ``gamma``. The official code weights positive pixels by 1 and
      negative pixels by ``focal_negative_weight`` (α = 0.3 there); MONAI's ``alpha`` weights positives by
      ``alpha`` and negatives by ``1 - alpha``, so we use ``alpha = 1 / (1 + w)`` and scale the term by
      ``1 + w``: the same value as the official loss.
    - SSIM (eq. 12): MONAI ``SSIMLoss`` (11x11 Gaussian window, σ = 1.5, k1 = 0.01, k2 = 0.03) on ``p``.
    - IoU: ``1 - Σpg / Σ(p + g - pg)`` per image and channel (MONAI ``DiceLoss(jaccard=True)``).

    A weight of 0 drops its term (the loss ablations of Table 1 and §5.4).

    Args:
        focal_weight: λ1 (0.3).
        ssim_weight: λ2 (0.4).
        iou_weight: λ3 (0.3).
        focal_gamma: focusing parameter γ (3, official code).
        focal_negative_weight: weight of background pixels relative to foreground in the focal term (0.3).
        spatial_dims: 2 for slices, 3 for volumes.
        ssim_win_size: SSIM window size (11).
        deep_supervision_weights: weights of the outputs when given a list (default: all 1, the paper's sum).
        reduction: ``"mean"`` | ``"sum"`` over the batch, or ``"none"`` for one value per image.

    Raises:
        ValueError: for negative weights, all-zero weights or an unknown reduction.
    """

    def __init__(
        self,
        focal_weight: float = 0.3,
        ssim_weight: float = 0.4,
        iou_weight: float = 0.3,
        focal_gamma: float = 3.0,
        focal_negative_weight: float = 0.3,
        spatial_dims: int = 2,
        ssim_win_size: int = 11,
        deep_supervision_weights: Sequence[float] | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        weights = {"focal_weight": focal_weight, "ssim_weight": ssim_weight, "iou_weight": iou_weight}
        for name, w in weights.items():
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}.")
        if sum(weights.values()) == 0:
            raise ValueError("at least one of focal_weight, ssim_weight, iou_weight must be > 0.")
        if focal_negative_weight < 0:
            raise ValueError(f"focal_negative_weight must be >= 0, got {focal_negative_weight}.")
        self.focal_weight, self.ssim_weight, self.iou_weight = float(focal_weight), float(ssim_weight), float(iou_weight)
        self.focal_scale = 1.0 + float(focal_negative_weight)
        self.focal = FocalLoss(use_softmax=False, gamma=focal_gamma, alpha=1.0 / self.focal_scale, reduction="none")
        self.ssim = SSIMLoss(spatial_dims=spatial_dims, data_range=1.0, win_size=ssim_win_size, reduction="none")
        self.iou = DiceLoss(sigmoid=True, jaccard=True, reduction="none")
        self._single = _SingleOutput(self)
        self.deep_supervision = DeepSupervisionLoss(self._single, weight_mode="same",
                                                    weights=list(deep_supervision_weights) if deep_supervision_weights else None)

    def per_image(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Hybrid loss of one output, one value per image, shape ``(B,)``, always computed in float32.

        Under mixed precision (``torch.autocast``) the terms are computed with autocast off on float32 inputs: SSIM's
        variances (``E[x²] - μ²``) cancel catastrophically and the IoU sums over a slice exceed float16's range, so a
        reduced-precision loss gives non-finite gradients (fp16) or runs as a slow low-precision convolution (bf16).
        """
        if input.shape != target.shape:
            raise ValueError(f"input {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape.")
        with torch.autocast(device_type=input.device.type, enabled=False):
            return self._terms(input.float(), target.float())

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = input.new_zeros(input.shape[0])
        if self.focal_weight:
            total = total + self.focal_weight * self.focal_scale * self.focal(input, target).flatten(1).mean(1)
        if self.ssim_weight:
            prob = torch.sigmoid(input)
            # MONAI's SSIM returns one value per (image, channel) group; average channels per image
            ssim = torch.stack([self.ssim(prob[:, c : c + 1], target[:, c : c + 1]).view(-1)
                                for c in range(input.shape[1])], 1).mean(1)
            total = total + self.ssim_weight * ssim
        if self.iou_weight:
            total = total + self.iou_weight * self.iou(input, target).flatten(1).mean(1)
        return total

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Args:
            input: logits ``(B, C, *spatial)``, or a list of them (deep supervision: final output first).
            target: binary target ``(B, C, *spatial)``.

        Returns:
            the loss, reduced over the batch as ``reduction`` says.
        """
        if isinstance(input, (list, tuple)):
            return self.deep_supervision(list(input), target)
        return self._single(input, target)


class _SingleOutput(_Loss):
    """The hybrid loss of one output with the batch reduction applied (what DeepSupervisionLoss sums)."""

    def __init__(self, parent: HybridLoss) -> None:
        super().__init__(reduction=parent.reduction)
        self.__dict__["parent"] = parent  # not a submodule: avoids a reference cycle in the module tree

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.parent.per_image(input, target)
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss
