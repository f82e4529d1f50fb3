"""Augmentation pipelines: shapes, dtypes, view counts, asymmetry and randomness."""

import pytest
import torch

from bssl.data import build_dataset
from bssl.data.augment import (IMAGENET_MEAN, IMAGENET_STD, MultiView, byol_views, eval_transform, method_views,
                               mocov2_transform)
from bssl.errors import UserError


@pytest.fixture(scope="module")
def image():
    ds = build_dataset("shapes", "train", num_samples=4, image_size=32)
    return ds[0][0]


def test_views_are_normalised_float(image):
    mv = method_views("mocov2", 32, 2)
    views = mv(image)
    assert len(views) == 2
    for v in views:
        assert v.dtype == torch.float32 and v.shape == (3, 32, 32)
    assert not torch.equal(views[0], views[1])  # two independent random views


def test_eval_transform_is_deterministic_normalisation(image):
    t = eval_transform(32)
    a, b = t(image), t(image)
    assert torch.equal(a, b)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(a * std + mean, image.float() / 255, atol=1e-5)


def test_multicrop_adds_small_local_views(image):
    mv = method_views("simsiam", 32, 2, num_local=3, local_size=16)
    views = mv(image)
    assert len(mv) == 5
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 3
    with pytest.raises(UserError, match="unknown augmentation"):
        method_views("nope", 32, 2)


def test_byol_views_are_asymmetric():
    first, second = byol_views(32, 2)
    blur = lambda t: [tr for tr in t.transforms if type(tr).__name__ == "RandomApply" and
                      type(tr.transforms[0]).__name__ == "GaussianBlur"][0].p
    sol = lambda t: [tr for tr in t.transforms if type(tr).__name__ == "RandomSolarize"][0].p
    assert (blur(first), sol(first)) == (1.0, 0.0)
    assert (blur(second), sol(second)) == (0.1, 0.2)


def test_mocov2_aug_plus_parameters():
    t = mocov2_transform(224)
    names = [type(tr).__name__ for tr in t.transforms]
    assert names[:5] == ["RandomResizedCrop", "RandomApply", "RandomGrayscale", "RandomApply", "RandomHorizontalFlip"]
    assert t.transforms[0].scale == (0.2, 1.0)
    assert t.transforms[1].p == 0.8 and t.transforms[2].p == 0.2 and t.transforms[3].p == 0.5
    assert tuple(t.transforms[3].transforms[0].kernel_size) == (23, 23)  # 10% of 224, odd


def test_multiview_needs_views():
    with pytest.raises(UserError):
        MultiView([])


def test_crop_min_scale_overrides_the_paper_scale():
    assert method_views("byol", 32, 2).transforms[0].transforms[0].scale == (0.08, 1.0)
    assert method_views("byol", 32, 2, crop_min_scale=0.5).transforms[1].transforms[0].scale == (0.5, 1.0)
    assert method_views("mocov2", 32, 2, crop_min_scale=0.4).transforms[0].transforms[0].scale == (0.4, 1.0)
    with pytest.raises(UserError, match="crop_min_scale = 1.5"):
        method_views("simsiam", 32, 2, crop_min_scale=1.5)


def test_hue_and_blur_overrides():
    byol = method_views("byol", 32, 2, hue=0.5, blur=False).transforms
    for view in byol:
        assert view.transforms[2].transforms[0].hue == (-0.5, 0.5)
        assert view.transforms[4].p == 0.0
    assert method_views("byol", 32, 2).transforms[0].transforms[4].p == 1.0  # BYOL view 1 always blurs
    with pytest.raises(UserError, match="hue jitter = 0.7"):
        method_views("mocov2", 32, 2, hue=0.7)
    with pytest.raises(UserError, match="blur = 'maybe'"):
        method_views("mocov2", 32, 2, blur="maybe")
