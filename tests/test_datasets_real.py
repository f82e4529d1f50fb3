"""On-disk dataset loaders against tiny fixtures written in each real format (no downloads).

Every fixture is written the way the official release stores it: ImageFolder trees of PNG/JPEG
files, CIFAR python pickle batches, STL-10 column-major .bin files, VOC2007 XML + JPEG + ImageSets.
"""

import pickle
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bssl.data import build_dataset
from bssl.data.voc import VOC_CLASSES
from bssl.errors import UserError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _img(rng, size=16):
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _save(arr, path, fmt):
    Image.fromarray(arr).save(path, format=fmt)


# ---------------------------------------------------------------- ImageFolder
def make_imagefolder(root: Path, classes=("cat", "dog", "fish"), per_class=4, seed=0):
    """JPEG and PNG files of mixed sizes, as real folders have; returns the PNG pixels written."""
    rng = np.random.default_rng(seed)
    written = {}
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = _img(rng, 16 + 4 * (i % 2))
                if i % 2:
                    _save(img, root / split / cls / f"{i}.JPEG", "JPEG")
                else:
                    _save(img, root / split / cls / f"{i}.png", "PNG")
                    written[(split, cls, i)] = img
    return written


def test_imagefolder_reads_tree(tmp_path):
    written = make_imagefolder(tmp_path)
    ds = build_dataset("imagefolder", split="train", root=str(tmp_path))
    assert len(ds) == 12 and ds.classes == ["cat", "dog", "fish"] and not ds.multilabel
    img, label = ds[5]
    assert img.dtype == torch.uint8 and img.shape[0] == 3 and label == 1
    val = build_dataset("imagefolder", split="val", root=str(tmp_path))
    # samples sort by file name within a class: 0.png, 1.JPEG, 2.png, 3.JPEG
    assert torch.equal(val[4][0], torch.from_numpy(written[("val", "dog", 0)]).permute(2, 0, 1))
    assert val[5][0].shape == (3, 20, 20)


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(UserError, match="--data-root"):
        build_dataset("imagefolder", split="train", root=None)
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match=r"has no val/ folder \(its splits: train\); ask for 'train' or 'heldout'"):
        build_dataset("imagefolder", split="val", root=str(tmp_path))
    _save(_img(np.random.default_rng(0)), tmp_path / "train" / "a.png", "PNG")
    with pytest.raises(UserError, match="holds images directly"):
        build_dataset("imagefolder", split="train", root=str(tmp_path))


# ---------------------------------------------------------------- CIFAR
def make_cifar10(root: Path, per_batch=6, seed=0, bad_label=False):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_vis": 3072}, fh, protocol=2)
    for b, fname in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        labels = [int(v) for v in rng.permutation((np.arange(per_batch) + b * per_batch) % 10)]  # every class occurs
        if bad_label and fname == "test_batch":
            labels[0] = 10
        batch = {"batch_label": fname, "labels": labels, "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"{fname}_{i}.png" for i in range(per_batch)]}
        with open(folder / fname, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    return root


def make_cifar100(root: Path, n=10, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    with open(folder / "meta", "wb") as fh:
        pickle.dump(meta, fh)
    for split in ("train", "test"):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": rng.integers(0, 20, n).tolist()}
        with open(folder / split, "wb") as fh:
            pickle.dump(batch, fh)
    return root


def test_cifar10_pickles_decode_to_hwc_rows(tmp_path):
    make_cifar10(tmp_path)
    ds = build_dataset("cifar10", split="train", root=str(tmp_path))
    assert len(ds) == 30 and ds.num_classes == 10
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh)
    img, label = ds[2]
    # CIFAR rows are 1024 red, then green, then blue values, row-major
    assert torch.equal(img, torch.from_numpy(raw["data"][2].reshape(3, 32, 32)))
    assert label == raw["labels"][2]
    assert len(build_dataset("cifar10", split="test", root=str(tmp_path / "cifar-10-batches-py"))) == 6


def test_cifar100_fine_and_coarse(tmp_path):
    make_cifar100(tmp_path)
    fine = build_dataset("cifar100", split="test", root=str(tmp_path))
    coarse = build_dataset("cifar100", split="test", root=str(tmp_path), label_type="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20 and fine.classes[3] == "fine3"


def test_cifar_errors(tmp_path):
    make_cifar10(tmp_path / "bad", bad_label=True)
    with pytest.raises(UserError, match="label 10 is out of range 0..9"):
        build_dataset("cifar10", split="test", root=str(tmp_path / "bad"))
    (tmp_path / "bad" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        build_dataset("cifar10", split="train", root=str(tmp_path / "bad"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"neither the python batches \(cifar-10-batches-py/\) nor image folders"):
        build_dataset("cifar10", split="train", root=str(tmp_path / "empty"))


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    make_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": Evil(), "labels": []}, fh)
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        build_dataset("cifar10", split="test", root=str(tmp_path))


# ---------------------------------------------------------------- STL-10
def make_stl10(root: Path, n_train=8, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "class_names.txt").write_text("\n".join(
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    images = {}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", 3)):
        imgs = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        images[split] = imgs
        imgs.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column-major planes, as released
        if split != "unlabeled":
            rng.permutation(np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    return root, images


def test_stl10_binary_layout(tmp_path):
    _, images = make_stl10(tmp_path)
    ds = build_dataset("stl10", split="train", root=str(tmp_path))
    labels = np.fromfile(tmp_path / "stl10_binary" / "train_y.bin", dtype=np.uint8)
    img, label = ds[3]
    assert torch.equal(img, torch.from_numpy(images["train"][3])) and label == labels[3] - 1
    assert ds.classes[2] == "car" and len(ds) == 8
    unl = build_dataset("stl10", split="unlabeled", root=str(tmp_path))
    assert len(unl) == 3 and unl[0][1] == -1


def test_stl10_errors(tmp_path):
    make_stl10(tmp_path)
    folder = tmp_path / "stl10_binary"
    with open(folder / "test_X.bin", "ab") as fh:
        fh.write(b"\0" * 10)
    with pytest.raises(UserError, match="not a whole number of 96x96x3 images"):
        build_dataset("stl10", split="test", root=str(tmp_path))
    np.array([11, 1, 1, 1, 1, 1, 1, 1], dtype=np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(UserError, match="label 11 is out of range 1..10"):
        build_dataset("stl10", split="train", root=str(tmp_path))
    (folder / "train_y.bin").unlink()
    with pytest.raises(UserError, match="train_y.bin is missing"):
        build_dataset("stl10", split="train", root=str(tmp_path))


# ---------------------------------------------------------------- VOC2007
def _annotation(path: Path, image_id: str, objects):
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "VOC2007"
    ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(ann, "size")
    for tag, val in (("width", "24"), ("height", "20"), ("depth", "3")):
        ET.SubElement(size, tag).text = val
    for name, difficult in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if difficult else "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, val in (("xmin", "2"), ("ymin", "3"), ("xmax", "10"), ("ymax", "12")):
            ET.SubElement(box, tag).text = val
    ET.ElementTree(ann).write(path)


def make_voc2007(root: Path, n_trainval=24, n_test=16, seed=0, classes=VOC_CLASSES[:4]):
    """Every image holds 1-2 objects of the first classes; image 0 has a dog-only-difficult case."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    splits = {"trainval": [], "test": []}
    k = 0
    for split, n in (("trainval", n_trainval), ("test", n_test)):
        for _ in range(n):
            image_id = f"{k:06d}"
            k += 1
            picks = rng.choice(len(classes), size=int(rng.integers(1, 3)), replace=False)
            objects = [(classes[c], False) for c in picks]
            if k == 1:
                objects = [("person", False), ("dog", True), ("person", True)]
            _annotation(voc / "Annotations" / f"{image_id}.xml", image_id, objects)
            _save(_img(rng, 20), voc / "JPEGImages" / f"{image_id}.jpg", "JPEG")
            splits[split].append(image_id)
    for split, ids in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc2007_multilabel_with_difficult(tmp_path):
    make_voc2007(tmp_path)
    ds = build_dataset("voc2007", split="trainval", root=str(tmp_path))
    assert ds.multilabel and ds.num_classes == 20 and len(ds) == 24
    img, target = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 20, 20) and target.dtype == torch.float32
    person, dog = VOC_CLASSES.index("person"), VOC_CLASSES.index("dog")
    # person has a non-difficult object: positive; dog only difficult: positive but flagged
    assert target[person] == 1 and target[dog] == 1 and target.sum() == 2
    assert not ds.difficult[0, person] and ds.difficult[0, dog]
    assert ds.difficult.shape == (24, 20)
    # root may also be VOCdevkit/ or VOC2007/ itself
    assert len(build_dataset("voc2007", split="test", root=str(tmp_path / "VOCdevkit" / "VOC2007"))) == 16


def test_voc2007_errors(tmp_path):
    make_voc2007(tmp_path)
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    with pytest.raises(UserError, match="val.txt is missing"):
        build_dataset("voc2007", split="val", root=str(tmp_path))
    _annotation(voc / "Annotations" / "000003.xml", "000003", [("unicorn", False)])
    with pytest.raises(UserError, match="'unicorn' is not one of the 20 VOC classes"):
        build_dataset("voc2007", split="trainval", root=str(tmp_path))
    (voc / "JPEGImages" / "000030.jpg").unlink()
    with pytest.raises(UserError, match="000030.jpg is missing"):
        build_dataset("voc2007", split="test", root=str(tmp_path))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UserError, match="no VOC2007 folder"):
        build_dataset("voc2007", split="test", root=str(tmp_path / "elsewhere"))
