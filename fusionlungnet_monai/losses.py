"""FusionLungNet's hybrid loss (paper §4.6, eq. 9-12) with deep supervision (eq. 10), built on ``monai.losses``."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceLoss, FocalLoss
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["HybridLoss", "SeparableSSIMLoss"]


class SeparableSSIMLoss(_Loss):
    """``1 - SSIM`` with a Gaussian window, one value per image and channel: MONAI ``SSIMLoss``'s value (valid window,
    ``k1``, ``k2``), computed with the window's 1D factors, one axis at a time, on the five local moments at once.

    The Gaussian window is the outer product of 1D Gaussians, so filtering by it axis by axis gives the same local
    means as MONAI's full 2D/3D window (``2·11`` instead of ``11²`` multiply-adds per voxel in 2D), and one grouped
    convolution per axis serves ``x``, ``y``, ``x²``, ``y²`` and ``xy`` together.

    Args:
        spatial_dims: 2 or 3.
        win_size: window size (11).
        kernel_sigma: Gaussian σ (1.5).
        k1: luminance stability constant (0.01).
        k2: contrast stability constant (0.03).
        data_range: value range of the inputs (1 for probabilities).

    Raises:
        ValueError: for ``spatial_dims`` other than 2 or 3.
    """

    def __init__(self, spatial_dims: int = 2, win_size: int = 11, kernel_sigma: float = 1.5, k1: float = 0.01,
                 k2: float = 0.03, data_range: float = 1.0) -> None:
        super().__init__(reduction=LossReduction.NONE.value)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        dist = torch.arange(start=(1 - win_size) / 2, end=(1 + win_size) / 2, step=1)
        gauss = torch.exp(-torch.pow(dist / kernel_sigma, 2) / 2)
        self.register_buffer("window", gauss / gauss.sum(), persistent=False)
        self.c1, self.c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
        self._windows: dict = {}  # the window per (device, dtype): one host-to-device copy, not one a step

    def _window(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._windows:
            self._windows[key] = self.window.to(like)
        return self._windows[key]

    def _filter(self, moments: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if self.spatial_dims == 2 else F.conv3d
        groups = moments.shape[1]
        w = self._window(moments)
        for axis in range(self.spatial_dims):
            shape = [1, 1] + [1] * self.spatial_dims
            shape[2 + axis] = w.numel()
            moments = conv(moments, w.view(shape).expand(groups, *shape[1:]), groups=groups)
        return moments

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args:
            input: ``(B, C, *spatial)`` values in ``[0, data_range]``.
            target: the same shape.

        Returns:
            ``1 - mean SSIM`` per image and channel, shape ``(B, C)``.
        """
        b, c = input.shape[:2]
        x, y = input.reshape(b * c, 1, *input.shape[2:]), target.reshape(b * c, 1, *target.shape[2:])
        mu_x, mu_y, mu_xx, mu_yy, mu_xy = self._filter(torch.cat([x, y, x * x, y * y, x * y], 1)).unbind(1)
        sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
        ssim = ((2 * mu_x * mu_y + self.c1) / (mu_x**2 + mu_y**2 + self.c1)) * (
            (2 * sigma_xy + self.c2) / (sigma_x + sigma_y + self.c2))
        return 1 - ssim.flatten(1).mean(1).view(b, c)


class HybridLoss(_Loss):
    """``λ1·focal + λ2·SSIM + λ3·IoU`` on logits; a list of outputs (deep supervision) gives the plain sum
    ``L(refined) + Σ L(side)`` of the paper's eq. 10 (MONAI ``DeepSupervisionLoss`` with equal weights).

    Terms (each on sigmoid probabilities ``p`` of the logits, per channel):

    - focal (eq. 11): MONAI ``FocalLoss`` with ``gamma``. The official code weights positive pixels by 1 and
      negative pixels by ``focal_negative_weight`` (α = 0.3 there); MONAI's ``alpha`` weights positives by
      ``alpha`` and negatives by ``1 - alpha``, so we use ``alpha = 1 / (1 + w)`` and scale the term by
      ``1 + w``: the same value as the official loss.
    - SSIM (eq. 12): :class:`SeparableSSIMLoss` (MONAI ``SSIMLoss``'s value: 11x11 Gaussian window, σ = 1.5,
      k1 = 0.01, k2 = 0.03) on ``p``.
    - IoU: ``1 - Σpg / Σ(p + g - pg)`` per image and channel (MONAI ``DiceLoss(jaccard=True)``).

    Outputs of the target's shape are stacked along the batch and go through each term once; outputs of other sizes
    go through MONAI ``DeepSupervisionLoss`` (target resized to each). A weight of 0 drops its term (the loss
    ablations of Table 1 and §5.4).

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
        compile: ``torch.compile`` the three terms (their elementwise work is fused into a few kernels: the loss is
            memory-bound, about 20 % of a bf16 step on an H100 eager); the first steps pay the compilation.

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
        compile: bool = False,
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
        self.ssim = SeparableSSIMLoss(spatial_dims=spatial_dims, win_size=ssim_win_size)
        self.iou = DiceLoss(sigmoid=True, jaccard=True, reduction="none")
        self._single = _SingleOutput(self)
        self.__dict__["_compiled_terms"] = torch.compile(self._terms) if compile else None  # not a submodule
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
            return (self._compiled_terms or self._terms)(input.float(), target.float())

    def _terms(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = input.new_zeros(input.shape[0])
        if self.focal_weight:
            total = total + self.focal_weight * self.focal_scale * self.focal(input, target).flatten(1).mean(1)
        if self.ssim_weight:
            total = total + self.ssim_weight * self.ssim(torch.sigmoid(input), target).mean(1)
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
        if not isinstance(input, (list, tuple)):
            return self._single(input, target)
        outputs = list(input)
        if any(o.shape != target.shape for o in outputs):
            return self.deep_supervision(outputs, target)
        # every output on the target's grid: one pass over the stacked batch, then Σ_k w_k·L_k per image
        per = self.per_image(torch.cat(outputs, 0), target.repeat(len(outputs), *[1] * (target.ndim - 1)))
        weights = self.deep_supervision.get_weights(len(outputs))  # python floats: no host-to-device copy a step
        return self._reduce(sum(w * p for w, p in zip(weights, per.view(len(outputs), -1).unbind(0))))

    def _reduce(self, loss: torch.Tensor) -> torch.Tensor:
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss


class _SingleOutput(_Loss):
    """The hybrid loss of one output with the batch reduction applied (what DeepSupervisionLoss sums)."""

    def __init__(self, parent: HybridLoss) -> None:
        super().__init__(reduction=parent.reduction)
        self.__dict__["parent"] = parent  # not a submodule: avoids a reference cycle in the module tree

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.parent._reduce(self.parent.per_image(input, target))
