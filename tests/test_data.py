import numpy as np
import pytest
import torch

from bssl.data import build_dataset, dataset_from_config
from bssl.data.synthetic import SHAPE_CLASSES, _shape_mask, render_shape_image
from bssl.errors import UserError


def test_shapes_deterministic_and_index_addressable():
    a = build_dataset("shapes", num_samples=40, image_size=32, seed=3)
    b = build_dataset("shapes", num_samples=60, image_size=32, seed=3)
    # the first 40 images of a bigger set are the same images: each depends on (seed, split, index) only
    assert np.array_equal(a.images, b.images[:40])
    assert np.array_equal(a.labels, b.labels[:40])
    img, label = render_shape_image(3, "train", 17, 32, 10)
    assert np.array_equal(img, a.images[17]) and label == a.labels[17]


def test_shapes_seed_and_split_change_the_data():
    a = build_dataset("shapes", num_samples=20, seed=0)
    b = build_dataset("shapes", num_samples=20, seed=1)
    t = build_dataset("shapes", split="test", num_samples=20, seed=0)
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, t.images)


def test_shapes_items_and_class_balance():
    ds = build_dataset("shapes", num_samples=1000, image_size=24, num_classes=10)
    img, label = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 24, 24)
    assert isinstance(label, int) and 0 <= label < 10
    counts = np.bincount(ds.labels, minlength=10)
    assert counts.min() > 60  # roughly uniform over classes
    assert ds.num_classes == 10 and ds.classes == list(SHAPE_CLASSES)


@pytest.mark.parametrize("name,area", [
    ("disc", np.pi * 0.3 ** 2),
    ("square", (1.6 * 0.3) ** 2),
    ("ring", np.pi * (0.3 ** 2 - (0.55 * 0.3) ** 2)),
    ("diamond", 2 * 0.7 * 0.3 ** 2),
])
def test_shape_masks_have_the_geometry_of_their_label(name, area):
    # label correctness: the mask drawn for a class has that class's analytic area
    cls = SHAPE_CLASSES.index(name)
    mask = _shape_mask(cls, np.random.default_rng(0), 256, 0.3, 0.5, 0.5)
    assert mask.mean() == pytest.approx(area, rel=0.03)


def test_labels_are_learnable_from_pixels():
    # a linear model on raw pixels must beat chance clearly if labels match the drawn shapes
    from sklearn.linear_model import LogisticRegression

    tr = build_dataset("shapes", num_samples=1500, image_size=16, num_classes=4, seed=5)
    te = build_dataset("shapes", split="test", num_samples=400, image_size=16, num_classes=4, seed=5)

    def feats(ds):
        # gradient magnitude is colour-invariant, so a linear model can see the outline
        x = ds.images.astype(np.float32).mean(-1)
        gx, gy = np.gradient(x, axis=(1, 2))
        return np.abs(np.fft.fft2(np.hypot(gx, gy))).reshape(len(x), -1)

    clf = LogisticRegression(max_iter=300).fit(feats(tr), tr.labels)
    assert clf.score(feats(te), te.labels) > 0.45  # chance is 0.25


def test_multilabel_targets_and_difficult_flags():
    ds = build_dataset("shapes-multilabel", num_samples=200, image_size=32)
    assert ds.multilabel and ds.labels.shape == (200, 10)
    per_image = ds.labels.sum(1)
    assert per_image.min() >= 1 and per_image.max() <= 3
    assert not np.any(ds.difficult & (ds.labels == 0))  # only present objects can be difficult
    assert ds.difficult.any()
    _, target = ds[0]
    assert target.dtype == torch.float32 and target.shape == (10,)


def test_digits_is_bundled_real_data():
    tr = build_dataset("digits", split="train", image_size=16)
    te = build_dataset("digits", split="test", image_size=16)
    assert len(tr) + len(te) == 1797
    assert tr.images.shape[1:] == (16, 16, 3)
    assert set(np.unique(te.labels)) == set(range(10))


def test_bad_dataset_options_are_user_errors():
    with pytest.raises(UserError, match="unknown dataset"):
        build_dataset("no-such-data")
    with pytest.raises(UserError, match="num_classes"):
        build_dataset("shapes", num_classes=50)
    with pytest.raises(UserError, match="split"):
        build_dataset("shapes", split="holdout")


def test_dataset_from_config_uses_data_section():
    cfg = {"run": {"seed": 2}, "data": {"dataset": "shapes", "num_train": 30, "num_test": 10, "image_size": 16,
                                        "num_classes": 5}}
    tr = dataset_from_config(cfg, "train")
    te = dataset_from_config(cfg, "test")
    assert len(tr) == 30 and len(te) == 10 and tr.num_classes == 5 and tr.images.shape[1] == 16
