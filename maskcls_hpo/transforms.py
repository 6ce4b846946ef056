"""Batched tensor augmentation and normalisation, run on the batch's own device (the GPU when there is one).

Batches come from the uint8 image cache as `(B, 3, H, W) uint8` tensors. Training batches go through
:class:`BatchAugment` (random resized crop + horizontal flip in one resampling step, then colour jitter,
then normalisation); validation and prediction batches only through :func:`normalize`. Both return
`(B, 3, H, W) float32`.

Every random parameter is drawn per sample from a `torch.Generator` that lives on the batch's device and is
seeded explicitly (:meth:`BatchAugment.reseed`), so a run with the same seed sees the same augmentations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

__all__ = ["BatchAugment", "normalize"]

# ITU-R 601-2 luma weights, the ones torchvision's `rgb_to_grayscale` (and so its ColorJitter) uses.
_LUMA = (0.2989, 0.587, 0.114)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Convert a uint8 batch to float and normalise each channel: `(x / 255 - mean) / std`.

    Args:
        images: `(B, 3, H, W) uint8` (or float already scaled to [0, 1]) on any device.
        mean, std: 3 floats each, in the [0, 1] pixel scale (e.g. ImageNet's (0.485, 0.456, 0.406)).

    Returns:
        `(B, 3, H, W) float32` on the same device.
    """
    if images.dtype == torch.uint8:  # a new float tensor: normalise it in place (one full-batch pass less)
        return TF.normalize(images.float().div_(255.0), mean=list(mean), std=list(std), inplace=True)
    return TF.normalize(images.float(), mean=list(mean), std=list(std))


class BatchAugment:
    """Per-sample random augmentation of a whole batch with vectorised tensor ops.

    For each image independently (parameters drawn from the seeded generator):

    1. random resized crop: a region of `scale ~ U(crop_scale)` of the image area and aspect ratio
       `r ~ logU(ratio)` relative to the image's own aspect ratio (r = 1 keeps the image's shape, so the
       stretch back to `(H, W)` is `r`; torchvision's `RandomResizedCrop` default range (3/4, 4/3) but
       measured in pixels there; a side longer than the image is clamped to it instead of re-drawn),
       placed uniformly inside the image and resampled bilinearly back to the input size `(H, W)` with
       `affine_grid` + `grid_sample`;
    2. horizontal flip with probability `flip_p`, folded into the same resampling (a sign of the affine x axis);
    3. colour jitter with factors `b, c, s ~ U(1 - color_jitter, 1 + color_jitter)`, applied in this fixed
       order with torchvision's formulas: brightness `x * b`; contrast `(x - m) * c + m` with `m` the mean
       grayscale value of the image; saturation `(x - g) * s + g` with `g` the pixel's grayscale value;
       clamped to [0, 1] after each step (torchvision `ColorJitter` draws a random order instead);
    4. :func:`normalize` with `mean`, `std`.

    Args:
        mean, std: normalisation, 3 floats each in the [0, 1] pixel scale.
        crop_scale: (min, max) share of the image area kept by the crop, `0 < min <= max <= 1`.
        ratio: (min, max) crop aspect ratio relative to the image's; (1, 1) with crop_scale (1, 1) is no crop.
        color_jitter: strength in [0, 1]; 0 disables colour jitter.
        flip_p: probability of a horizontal flip.
        seed: seeds the generator; call :meth:`reseed` to restart it (the training loop does so every
            epoch with a seed derived from the run's seed and the epoch).

    Call it on a `(B, 3, H, W) uint8` batch; it returns `(B, 3, H, W) float32` on the batch's device.

    Example::

        aug = BatchAugment(mean=(0.5,) * 3, std=(0.5,) * 3, crop_scale=(0.8, 1.0), color_jitter=0.2, seed=0)
        x = aug(torch.randint(0, 256, (16, 3, 48, 36), dtype=torch.uint8))   # (16, 3, 48, 36) float32
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_scale: tuple[float, float] = (0.8, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        color_jitter: float = 0.2,
        flip_p: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {list(crop_scale)}")
        if not 0.0 <= color_jitter <= 1.0:
            raise ValueError(f"color_jitter must be in [0, 1], got {color_jitter}")
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.color_jitter = float(color_jitter)
        self.flip_p = float(flip_p)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def reseed(self, seed: int) -> None:
        """Restart the random stream from `seed` (on every device)."""
        self.seed = int(seed)
        self._generators.clear()

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _uniform(self, n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=device).mul_(high - low).add_(low)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        device = images.device
        gen = self._generator(device)
        b, _, h, w = images.shape
        # NOTE the 1/255 scaling is folded into the brightness factor (resampling is linear), and every step
        # after the resampling works in place: on a CPU each extra full-batch pass or allocation costs as much
        # as the arithmetic (benchmarks/b1_input_pipeline.py), on a GPU each is one more kernel launch.
        scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        x = images.float()

        # 1 + 2: crop and flip as one axis-aligned affine resampling. The sampling grid maps output pixel
        # centres to input coordinates in [-1, 1] (affine_grid's convention with align_corners=False):
        # x_in = frac_w * sign * x_out + centre_x, y_in = frac_h * y_out + centre_y, built separably.
        area = self._uniform(b, *self.crop_scale, gen, device)
        log_ratio = self._uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]), gen, device)
        ratio = torch.exp(log_ratio)
        frac_w = torch.sqrt(area * ratio).clamp_(max=1.0)
        frac_h = torch.sqrt(area / ratio).clamp_(max=1.0)
        centre_x = (torch.rand(b, generator=gen, device=device) * 2 - 1) * (1 - frac_w)
        centre_y = (torch.rand(b, generator=gen, device=device) * 2 - 1) * (1 - frac_h)
        flip = torch.rand(b, generator=gen, device=device) < self.flip_p
        sign_x = torch.where(flip, -1.0, 1.0)
        xs = torch.arange(w, device=device, dtype=torch.float32).mul_(2.0 / w).add_(1.0 / w - 1.0)
        ys = torch.arange(h, device=device, dtype=torch.float32).mul_(2.0 / h).add_(1.0 / h - 1.0)
        grid = torch.empty(b, h, w, 2, device=device)
        grid[..., 0] = (frac_w * sign_x).view(b, 1, 1) * xs.view(1, 1, w) + centre_x.view(b, 1, 1)
        grid[..., 1] = frac_h.view(b, 1, 1) * ys.view(1, h, 1) + centre_y.view(b, 1, 1)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        del grid

        # 3: colour jitter, per-sample factors broadcast over (3, H, W); x * c + m * (1 - c) == (x - m) * c + m.
        if self.color_jitter > 0:
            lo, hi = 1.0 - self.color_jitter, 1.0 + self.color_jitter
            bright, contrast, sat = (self._uniform(b, lo, hi, gen, device).view(b, 1, 1, 1) for _ in range(3))
            x.mul_(bright * scale).clamp_(0.0, 1.0)
            luma = torch.tensor(_LUMA, device=device).view(1, 3, 1, 1)
            grey_mean = (x.mean(dim=(2, 3), keepdim=True) * luma).sum(dim=1, keepdim=True)
            x.mul_(contrast).add_(grey_mean * (1 - contrast)).clamp_(0.0, 1.0)
            grey = (x[:, 0:1] * _LUMA[0]).add_(x[:, 1:2], alpha=_LUMA[1]).add_(x[:, 2:3], alpha=_LUMA[2])
            x.mul_(sat).add_(grey.mul_(1 - sat)).clamp_(0.0, 1.0)
            del grey
        elif scale != 1.0:
            x.mul_(scale)

        # 4: normalise in place (x is this call's own tensor).
        return TF.normalize(x, mean=list(self.mean), std=list(self.std), inplace=True)
