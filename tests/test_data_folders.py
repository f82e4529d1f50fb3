"""Real photo folders end to end on the data side: the held-out split, RGB decoding of every image
mode, the data summary, layout mistakes caught when the dataset is built, CIFAR-10 on either layout.

Fixtures are tiny JPEG/PNG files written with Pillow in tmp folders (no downloads).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bssl.data import (HELDOUT, build_dataset, dataset_from_config, format_summary, heldout_split, image_sizes,
                       read_rgb, summarize)
from bssl.errors import UserError
from test_datasets_real import make_cifar10, make_stl10, make_voc2007


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_tree(root: Path, splits=("train", "val"), classes=("cat", "dog", "fish"), per_class=10, size=8, seed=0):
    """root/<split>/<class>/<i>.jpg|png, alternating JPEG and PNG, sizes size and size+4."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                s = size + 4 * (i % 2)
                img = Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
                img.save(root / split / cls / (f"{i}.jpg" if i % 2 else f"{i}.png"))
    return root


def _cfg(root, dataset="imagefolder", **data):
    return {"run": {"seed": data.pop("seed", 0)}, "data": {"dataset": dataset, "root": str(root), **data}}


# ---------------------------------------------------------------- the held-out split
def test_heldout_is_the_val_folder_else_test_folder(tmp_path):
    make_tree(tmp_path / "a", splits=("train", "val"))
    ds = build_dataset("imagefolder", split=HELDOUT, root=str(tmp_path / "a"))
    assert len(ds) == 30 and ds.heldout["source"] == "folder" and ds.heldout["split"] == "val"
    assert all("/val/" in p for p in ds.paths)
    assert len(build_dataset("imagefolder", split="train", root=str(tmp_path / "a"))) == 30  # val/ leaves train whole
    make_tree(tmp_path / "b", splits=("train", "test"), per_class=2)
    info = heldout_split("imagefolder", str(tmp_path / "b"))
    assert info == {"split": "test", "source": "folder", "description": "folder test/"}
    assert len(dataset_from_config(_cfg(tmp_path / "b"), HELDOUT)) == 6


def test_heldout_of_released_datasets_is_their_test_split(tmp_path):
    cfg = {"run": {"seed": 1}, "data": {"dataset": "shapes", "num_train": 12, "num_test": 5, "image_size": 16}}
    ds = dataset_from_config(cfg, HELDOUT)
    assert len(ds) == 5 and ds.heldout["split"] == "test"
    assert np.array_equal(ds.images, dataset_from_config(cfg, "test").images)
    assert heldout_split("digits")["split"] == "test"
    assert len(dataset_from_config({"data": {"dataset": "digits", "image_size": 8}}, HELDOUT)) == 450
    make_cifar10(tmp_path / "c")
    assert len(build_dataset("cifar10", split=HELDOUT, root=str(tmp_path / "c"))) == 6
    make_voc2007(tmp_path / "v", n_trainval=4, n_test=3)
    assert len(build_dataset("voc2007", split=HELDOUT, root=str(tmp_path / "v"))) == 3
    make_stl10(tmp_path / "s")
    assert len(build_dataset("stl10", split=HELDOUT, root=str(tmp_path / "s"))) == 6


def test_seeded_split_is_stratified_disjoint_and_repeatable(tmp_path):
    make_tree(tmp_path, splits=("train",), per_class=10)
    cfg = _cfg(tmp_path, holdout_fraction=0.2, seed=3)
    train, held = dataset_from_config(cfg, "train"), dataset_from_config(cfg, HELDOUT)
    assert len(train) == 24 and len(held) == 6
    assert np.bincount(held.targets).tolist() == [2, 2, 2]  # 0.2 of each class
    assert not set(train.paths) & set(held.paths)
    assert sorted(train.paths + held.paths) == sorted(str(p) for p in tmp_path.glob("train/*/*"))
    assert held.heldout == {"split": HELDOUT, "source": "seeded", "fraction": 0.2, "seed": 3,
                            "description": "seeded stratified split of train/ (fraction 0.2, seed 3)"}
    # the same call gives the same images; build_dataset with the same options agrees (what eval uses)
    assert dataset_from_config(cfg, HELDOUT).paths == held.paths
    direct = build_dataset("imagefolder", split=HELDOUT, root=str(tmp_path), holdout_fraction=0.2, seed=3)
    assert direct.paths == held.paths and direct.fingerprint == held.fingerprint
    other = dataset_from_config(_cfg(tmp_path, holdout_fraction=0.2, seed=4), HELDOUT)
    assert other.paths != held.paths and other.fingerprint != held.fingerprint
    assert len(dataset_from_config(_cfg(tmp_path), HELDOUT)) == 3  # default fraction 0.1: one per class


def test_seeded_split_keeps_a_choice_when_images_are_added(tmp_path):
    make_tree(tmp_path, splits=("train",), classes=("a", "b"), per_class=20)
    before = set(dataset_from_config(_cfg(tmp_path), HELDOUT).paths)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "extra.png")
    after = set(dataset_from_config(_cfg(tmp_path), HELDOUT).paths)
    assert len(before & after) >= len(before) - 1  # ranked by a hash of each path: one swap at most


@pytest.mark.parametrize("bad", [0, 0.0, 0.6, -0.1, "half", True, None])
def test_holdout_fraction_out_of_range_is_a_user_error(tmp_path, bad):
    make_tree(tmp_path, splits=("train",), per_class=2)
    # the config schema declares the range (0, 0.5]: the value fails validation with the key named
    with pytest.raises(UserError, match=r"data.holdout_fraction = .* must be (> 0|<= 0.5|a finite number|set)"):
        dataset_from_config(_cfg(tmp_path, holdout_fraction=bad), "train")


def test_asking_for_a_missing_split_folder_names_the_ones_there(tmp_path):
    make_tree(tmp_path, splits=("train", "val"), per_class=1)
    with pytest.raises(UserError, match=r"has no test/ folder \(its splits: train, val\); ask for 'train' or "
                                        r"'heldout' \(here: val/\)"):
        build_dataset("imagefolder", split="test", root=str(tmp_path))


# ---------------------------------------------------------------- every image mode decodes to RGB
def _decode(tmp_path, img: Image.Image, name: str, **save) -> torch.Tensor:
    path = tmp_path / name
    img.save(path, **save)
    out = read_rgb(str(path))
    assert out.dtype == torch.uint8 and out.shape == (3, img.size[1], img.size[0])
    return out


def test_grayscale_and_16_bit_become_three_equal_channels(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    out = _decode(tmp_path, Image.fromarray(gray, "L"), "g.png")
    assert torch.equal(out[0], torch.from_numpy(gray)) and torch.equal(out[0], out[2])
    out = _decode(tmp_path, Image.fromarray(gray, "L"), "g.jpg", quality=95)
    assert torch.equal(out[0], out[1])
    deep = Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit grayscale PNG
    deep = deep if deep.mode.startswith("I;16") else deep.convert("I;16")
    out = _decode(tmp_path, deep, "g16.png")
    assert torch.equal(out[1], torch.from_numpy(gray))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[:, :4] = (200, 30, 30)
    rgb[:, 4:] = (20, 40, 220)
    out = _decode(tmp_path, Image.fromarray(rgb).convert("CMYK"), "c.jpg", quality=100)
    assert (out.permute(1, 2, 0).int() - torch.from_numpy(rgb).int()).abs().max() < 12


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[0, 2, 3] = 255, 0, 128
    out = _decode(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png")
    assert out[:, 0, 0].tolist() == [10, 200, 30]  # opaque: its colour
    assert out[:, 0, 1].tolist() == [255, 255, 255]  # transparent: white, not the hidden colour
    assert out[:, 0, 2].tolist() == pytest.approx([132, 227, 142], abs=2)  # half: blended with white
    la = Image.fromarray(np.stack([np.full((4, 4), 40, np.uint8), rgba[..., 3]], -1), "LA")
    out = _decode(tmp_path, la, "la.png")
    assert out[:, 0, 0].tolist() == [40, 40, 40] and out[:, 0, 1].tolist() == [255, 255, 255]
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), "P")
    pal.putpalette([0, 0, 0, 250, 10, 10] + [0] * 762)
    out = _decode(tmp_path, pal, "p.png", transparency=0)  # index 0 is transparent
    assert out[:, 0, 0].tolist() == [255, 255, 255] and out[:, 0, 1].tolist() == [250, 10, 10]


def test_camera_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (8, 4), (200, 10, 10)).save(tmp_path / "phone.jpg", exif=exif)
    assert read_rgb(str(tmp_path / "phone.jpg")).shape == (3, 8, 4)


def test_mixed_modes_in_one_folder_load_as_rgb(tmp_path):
    make_tree(tmp_path, splits=("train", "val"), per_class=1)
    Image.new("L", (8, 8), 90).save(tmp_path / "train" / "cat" / "gray.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 0)).save(tmp_path / "train" / "dog" / "alpha.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "train" / "fish" / "cmyk.jpg")
    ds = build_dataset("imagefolder", split="train", root=str(tmp_path))
    for i in range(len(ds)):
        img, _ = ds[i]
        assert img.dtype == torch.uint8 and img.shape[0] == 3


# ---------------------------------------------------------------- layout mistakes, caught at construction
def _err(tmp_path, split="train", dataset="imagefolder"):
    with pytest.raises(UserError) as info:
        dataset_from_config(_cfg(tmp_path, dataset=dataset), split)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_no_train_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    msg = _err(tmp_path)
    assert f"{tmp_path} has no train/ folder (found: photos)" in msg and f"{tmp_path}/train/<class>/<image>" in msg


def test_a_single_class(tmp_path):
    make_tree(tmp_path, splits=("train",), classes=("cat",), per_class=3)
    msg = _err(tmp_path)
    assert "has a single class folder (cat)" in msg and "at least two classes" in msg


def test_an_empty_class_folder(tmp_path):
    make_tree(tmp_path, splits=("train", "val"), per_class=2)
    (tmp_path / "val" / "bird").mkdir()
    (tmp_path / "train" / "bird").mkdir()
    (tmp_path / "train" / "bird" / ".DS_Store").write_bytes(b"\0")  # hidden files do not count as images
    msg = _err(tmp_path)
    assert f"class folder {tmp_path / 'train' / 'bird'} holds no images" in msg and "remove the folder" in msg


def test_class_sets_differ_between_train_and_heldout_folder(tmp_path):
    make_tree(tmp_path, splits=("train",), classes=("cat", "dog", "fish"), per_class=2)
    make_tree(tmp_path, splits=("val",), classes=("cat", "dog", "owl"), per_class=2)
    for split in ("train", HELDOUT):  # either split reports it, before any training
        msg = _err(tmp_path, split)
        assert "missing in val/: fish" in msg and "missing in train/: owl" in msg


def test_non_image_files_are_named_and_counted_hidden_ones_skipped(tmp_path):
    make_tree(tmp_path, splits=("train", "val"), per_class=2)
    for hidden in ("train/cat/.DS_Store", "train/dog/._0.png", "val/cat/.hidden"):
        (tmp_path / hidden).write_bytes(b"junk")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "train" / "cat" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "train" / "cat" / ".ipynb_checkpoints" / "notes.txt").write_text("x")
    (tmp_path / "train" / "cat" / "more").mkdir()  # nested folders count, as in torchvision's ImageFolder
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "more" / "x.png")
    assert len(dataset_from_config(_cfg(tmp_path), "train")) == 7  # hidden files and folders: silently ignored
    (tmp_path / "val" / "dog" / "notes.txt").write_text("x")
    (tmp_path / "val" / "fish" / "labels.csv").write_text("x")
    msg = _err(tmp_path, "train")  # the held-out folder is checked when train is built
    assert "2 file(s) in the class folders of" in msg and str(tmp_path / "val") in msg
    assert "dog/notes.txt" in msg and "remove or move them" in msg


def test_images_directly_in_the_split_folder(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a.jpg")
    assert "holds images directly (a.jpg, ...); sort them into one folder per class" in _err(tmp_path)
    make_tree(tmp_path, splits=("train",), per_class=1)
    assert "holds 1 image(s) outside the class folders (e.g. a.jpg)" in _err(tmp_path)


def test_default_preset_validation_catches_the_held_out_folder(tmp_path):
    """What `bssl run` checks before training: building "train" scans val/ too."""
    make_tree(tmp_path, splits=("train",), per_class=2)
    (tmp_path / "val").mkdir()
    assert "has no class folders" in _err(tmp_path)


# ---------------------------------------------------------------- CIFAR-10 on either layout
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_cifar10_as_jpeg_folders(tmp_path):
    make_tree(tmp_path, splits=("train", "val"), classes=CIFAR_CLASSES, per_class=2, size=32)
    cfg = _cfg(tmp_path, dataset="cifar10")
    train, held = dataset_from_config(cfg, "train"), dataset_from_config(cfg, HELDOUT)
    assert len(train) == 20 and len(held) == 20 and train.classes == list(CIFAR_CLASSES)
    assert held.heldout["description"] == "folder val/"
    img, label = held[2]  # dog/0.png
    assert img.shape == (3, 32, 32) and label == 1
    shutil.rmtree(tmp_path / "val")  # no held-out folder: seeded split of train/
    assert len(dataset_from_config(cfg, HELDOUT)) == 10 and len(dataset_from_config(cfg, "train")) == 10


def test_cifar10_pickles_still_read(tmp_path):
    make_cifar10(tmp_path)
    cfg = _cfg(tmp_path, dataset="cifar10")
    assert len(dataset_from_config(cfg, "train")) == 30 and len(dataset_from_config(cfg, HELDOUT)) == 6


def test_cifar10_layout_errors(tmp_path):
    (tmp_path / "downloads").mkdir()
    msg = _err(tmp_path, dataset="cifar10")
    assert "holds neither the python batches (cifar-10-batches-py/) nor image folders" in msg
    assert "(found: downloads)" in msg
    make_tree(tmp_path, splits=("train",), classes=("a", "b"), per_class=2)
    assert "has 2 class folders (a, b), cifar10 has 10" in _err(tmp_path, dataset="cifar10")


# ---------------------------------------------------------------- the data summary
def test_summary_of_an_image_folder(tmp_path):
    make_tree(tmp_path, splits=("train", "val"), per_class=4)
    Image.new("RGB", (30, 20)).save(tmp_path / "train" / "dog" / "wide.png")
    s = summarize(_cfg(tmp_path))
    assert s["dataset"] == "imagefolder" and s["root"] == str(tmp_path) and s["layout"] == "image folders"
    assert s["splits"]["train"]["images"] == 13 and s["splits"][HELDOUT]["images"] == 12
    assert s["splits"][HELDOUT]["split"] == "val" and s["heldout"]["source"] == "folder"
    assert s["classes"] == {"count": 3, "names": ["cat", "dog", "fish"], "names_truncated": False}
    sizes = s["splits"]["train"]["sizes"]
    assert sizes["min"] == [8, 8] and sizes["max"] == [30, 20] and sizes["distinct"] == 3
    assert sizes["most_common"] in ([8, 8], [12, 12]) and not sizes["sampled"] and sizes["read"] == 13
    text = format_summary(s)
    assert "imagefolder at" in text and "held out  12 images from folder val/" in text
    assert "width 8-30, height 8-20" in text and "headers of all 13 files" in text


def test_summary_samples_headers_and_describes_a_seeded_split(tmp_path):
    make_tree(tmp_path, splits=("train",), classes=[f"c{i:02d}" for i in range(14)], per_class=3)
    s = summarize(_cfg(tmp_path, seed=5), sample=10)
    tr = s["splits"]["train"]
    assert tr["images"] == 28 and tr["sizes"]["read"] == 10 and tr["sizes"]["sampled"]
    assert s["heldout"] == {"split": HELDOUT, "source": "seeded", "fraction": 0.1, "seed": 5,
                            "description": "seeded stratified split of train/ (fraction 0.1, seed 5)"}
    assert summarize(_cfg(tmp_path, seed=5), sample=10) == s  # the sample is seeded
    text = format_summary(s)
    assert "(train/ minus the held-out images)" in text and "seeded sample of 10 of 28 files" in text
    assert "c09 ... (+4 more)" in text


def test_summary_of_embedded_data():
    cfg = {"run": {"seed": 0}, "data": {"dataset": "shapes", "num_train": 20, "num_test": 8, "image_size": 16}}
    s = summarize(cfg)
    assert s["layout"] == "embedded" and s["root"] is None and s["classes"]["count"] == 10
    assert s["splits"]["train"]["images"] == 20 and s["splits"][HELDOUT]["images"] == 8
    assert s["splits"]["train"]["sizes"]["most_common"] == [16, 16]
    assert s["heldout"]["description"] == "the dataset's test split"
    assert "16x16" in format_summary(s) and "held out  8 images from the dataset's test split" in format_summary(s)


def test_summary_of_released_formats(tmp_path):
    make_voc2007(tmp_path / "v", n_trainval=4, n_test=3)
    s = summarize(_cfg(tmp_path / "v", dataset="voc2007"))
    assert s["multilabel"] and s["layout"] == "VOC2007 folder" and s["root"] == str((tmp_path / "v").resolve())
    assert (s["splits"]["train"]["split"], s["splits"]["train"]["images"], s["splits"][HELDOUT]["images"]) == \
        ("trainval", 4, 3)
    assert s["classes"]["count"] == 20 and "(split trainval)" in format_summary(s)
    make_cifar10(tmp_path / "c")
    s = summarize(_cfg(tmp_path / "c", dataset="cifar10"))
    assert s["layout"] == "python batches" and s["splits"][HELDOUT]["split"] == "test"
    assert s["splits"]["train"]["sizes"]["most_common"] == [32, 32]


def test_image_sizes_of_a_row_subset_read_its_files(tmp_path):
    make_tree(tmp_path, splits=("train",), per_class=4)
    base = dataset_from_config(_cfg(tmp_path), "train")

    class Rows(torch.utils.data.Dataset):
        def __init__(self):
            self.base, self.rows = base, np.array([0, 2, 4])  # 8x8 PNGs only

        def __len__(self):
            return len(self.rows)

    sizes = image_sizes(Rows())
    assert sizes["source"] == "file headers" and sizes["read"] == 3 and sizes["max"] == [8, 8]
