"""Pascal VOC2007 classification: VOCdevkit/VOC2007/{Annotations, ImageSets/Main, JPEGImages}.

Multi-label targets per image from the XML annotations (parsed by torchvision's
VOCDetection.parse_voc_xml), with VOC07 "difficult" flags: difficult[i, c] is True when class c
appears in image i only through objects marked difficult (VOC's label 0 in <cls>_<split>.txt).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np
from torch.utils.data import Dataset

from ..errors import UserError
from .imagefolder import fingerprint, need_file, need_root, read_rgb
from .registry import DATASETS, HELDOUT

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
SPLITS = ("train", "val", "trainval", "test")


def find_voc_root(root: Optional[str]) -> Path:
    """Accept the folder holding VOCdevkit/, VOCdevkit/ itself, or VOC2007/ itself."""
    base = need_root("voc2007", root)
    for cand in (base / "VOCdevkit" / "VOC2007", base / "VOC2007", base):
        if (cand / "Annotations").is_dir() or (cand / "ImageSets").is_dir():
            return cand
    raise UserError(f"voc2007: no VOC2007 folder under {base}; expected {base}/VOCdevkit/VOC2007/"
                    f"{{Annotations,ImageSets/Main,JPEGImages}}")


def parse_annotation(path: Path):
    """Objects of one annotation file as (class name, difficult) pairs."""
    from torchvision.datasets import VOCDetection

    try:
        tree = VOCDetection.parse_voc_xml(ET.parse(path).getroot())
    except ET.ParseError as exc:
        raise UserError(f"annotation {path} is not valid XML ({exc})") from None
    objects = tree.get("annotation", {}).get("object", [])
    if isinstance(objects, dict):
        objects = [objects]
    out = []
    for obj in objects:
        name = str(obj.get("name", "")).strip()
        out.append((name, str(obj.get("difficult", "0")).strip() == "1"))
    return out


class VOC2007Dataset(Dataset):
    multilabel = True

    def __init__(self, voc_root: Path, split: str, transform=None):
        main = voc_root / "ImageSets" / "Main"
        ids_file = need_file(main / f"{split}.txt", "voc2007")
        ids = [ln.strip().split()[0] for ln in ids_file.read_text().splitlines() if ln.strip()]
        if not ids:
            raise UserError(f"{ids_file} lists no images")
        ann_dir, img_dir = voc_root / "Annotations", voc_root / "JPEGImages"
        for folder in (ann_dir, img_dir):
            if not folder.is_dir():
                raise UserError(f"voc2007: folder {folder} is missing; the VOC2007 folder needs Annotations/, "
                                f"ImageSets/Main/ and JPEGImages/")
        index = {c: i for i, c in enumerate(VOC_CLASSES)}
        targets = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.float32)
        any_easy = np.zeros((len(ids), len(VOC_CLASSES)), dtype=bool)
        for i, image_id in enumerate(ids):
            ann = need_file(ann_dir / f"{image_id}.xml", "voc2007")
            need_file(img_dir / f"{image_id}.jpg", "voc2007")
            for name, diff in parse_annotation(ann):
                if name not in index:
                    raise UserError(f"{ann}: object class {name!r} is not one of the 20 VOC classes")
                targets[i, index[name]] = 1.0
                any_easy[i, index[name]] |= not diff
        self.ids = ids
        self.images = [img_dir / f"{i}.jpg" for i in ids]
        self.paths = [str(p) for p in self.images]
        self.targets = targets
        self.difficult = (targets > 0) & ~any_easy
        self.classes = list(VOC_CLASSES)
        self.num_classes = len(VOC_CLASSES)
        self.transform = transform
        self.fingerprint = fingerprint([split, *ids, hashlib.sha256(targets.tobytes() + self.difficult.tobytes()).hexdigest()])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int):
        import torch

        img = read_rgb(str(self.images[idx]))
        if self.transform is not None:
            img = self.transform(img)
        return img, torch.from_numpy(self.targets[idx].copy())


@DATASETS.register("voc2007")
def voc2007(split: str = "trainval", root: Optional[str] = None) -> VOC2007Dataset:
    if split not in SPLITS:
        raise UserError(f"voc2007 has splits {', '.join(SPLITS)}, not {split!r}")
    return VOC2007Dataset(find_voc_root(root), split)


voc2007.eval_splits = ("trainval", HELDOUT)
