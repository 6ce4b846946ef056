"""Batched augmentation: exact identity/flip cases, per-sample parameters, seeding, jitter range."""

from __future__ import annotations

import pytest
import torch

from maskcls_hpo.transforms import BatchAugment, normalize

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.5)


def random_batch(b=4, h=12, w=9, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)


def test_normalize_values_by_hand():
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    x[:, :, 0, 0] = 255
    out = normalize(x, MEAN, STD)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 2, 2)
    assert out[0, :, 0, 0].tolist() == pytest.approx([(1 - 0.5) / 0.25, (1 - 0.4) / 0.2, (1 - 0.3) / 0.5])
    assert out[0, :, 1, 1].tolist() == pytest.approx([-0.5 / 0.25, -0.4 / 0.2, -0.3 / 0.5])


def test_no_crop_no_flip_no_jitter_is_just_normalize():
    x = random_batch()
    aug = BatchAugment(MEAN, STD, crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), color_jitter=0.0, flip_p=0.0)
    torch.testing.assert_close(aug(x), normalize(x, MEAN, STD), atol=1e-5, rtol=0)


def test_flip_always_mirrors_every_image():
    x = random_batch()
    aug = BatchAugment(MEAN, STD, crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), color_jitter=0.0, flip_p=1.0)
    torch.testing.assert_close(aug(x), normalize(x.flip(-1), MEAN, STD), atol=1e-5, rtol=0)


def test_crop_keeps_size_and_zooms_in():
    # a horizontal ramp 0..255 across the width: a crop of 1/4 of the area with the image's aspect keeps
    # half of the width, so each output row spans about half of the input's value range
    w = 64
    ramp = torch.linspace(0, 255, w).round().to(torch.uint8)
    x = ramp.view(1, 1, 1, w).expand(8, 3, 48, w).contiguous()
    aug = BatchAugment((0.0,) * 3, (1.0,) * 3, crop_scale=(0.25, 0.25), ratio=(1.0, 1.0), color_jitter=0.0, flip_p=0.0)
    out = aug(x)
    assert out.shape == (8, 3, 48, w) and out.dtype == torch.float32
    span = out[:, 0, 0, :].amax(dim=1) - out[:, 0, 0, :].amin(dim=1)
    assert span.tolist() == pytest.approx([0.5] * 8, abs=0.03)
    # each sample gets its own crop position
    assert len({round(v, 3) for v in out[:, 0, 0, 0].tolist()}) > 1


def test_brightness_jitter_stays_in_range_and_differs_per_sample():
    # a uniform grey image: contrast and saturation leave it unchanged, brightness scales it by U(0.8, 1.2)
    x = torch.full((16, 3, 8, 8), 100, dtype=torch.uint8)
    aug = BatchAugment(
        (0.0,) * 3, (1.0,) * 3, crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), color_jitter=0.2, flip_p=0.0, seed=3
    )
    out = aug(x)
    factors = out[:, 0, 0, 0] / (100 / 255)
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out), atol=1e-5)  # still uniform and grey
    assert factors.min() >= 0.8 - 1e-5 and factors.max() <= 1.2 + 1e-5
    assert factors.std() > 0.01


def test_same_seed_same_batch_and_reseed_restarts():
    x = random_batch(b=6)
    a = BatchAugment(MEAN, STD, seed=7)
    b = BatchAugment(MEAN, STD, seed=7)
    first = a(x)
    torch.testing.assert_close(first, b(x))
    assert not torch.allclose(a(x), first)  # the stream moves on
    a.reseed(7)
    torch.testing.assert_close(a(x), first)
    assert not torch.allclose(BatchAugment(MEAN, STD, seed=8)(x), first)


def test_rejects_bad_shapes_and_parameters():
    with pytest.raises(ValueError, match="crop_scale"):
        BatchAugment(MEAN, STD, crop_scale=(0.9, 0.5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        BatchAugment(MEAN, STD)(torch.zeros(3, 8, 8, dtype=torch.uint8))
