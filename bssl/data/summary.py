"""What a run trains and evaluates on: `summarize(cfg)` and `format_summary(summary)`.

Image sizes of on-disk files come from the headers (no decoding) of a seeded sample of at most
`sample` files per split, so a 50k-image folder is summarised in about a second; in-memory
datasets (generated, pickled or binary releases) hold one size, read from their arrays.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .registry import DATASETS, HELDOUT, dataset_from_config

# Class names kept in the summary dict; the formatted line shows fewer.
MAX_CLASS_NAMES = 50
SHOWN_CLASS_NAMES = 10


_LAYOUTS = {"shapes": "embedded", "shapes-multilabel": "embedded", "digits": "embedded",
            "cifar10": "python batches", "cifar100": "python batches", "stl10": "binary files",
            "voc2007": "VOC2007 folder"}


def _layout(name: str, ds) -> str:
    if getattr(ds, "folder", None) is not None or getattr(getattr(ds, "base", None), "folder", None) is not None:
        return "image folders"
    return _LAYOUTS.get(name, "files")


def image_sizes(ds, sample: int = 2000, seed: int = 0) -> Dict[str, Any]:
    """Image sizes (width, height) of a dataset.

    Datasets with files (`.paths`, or `.base.paths` and `.rows` for a row subset) are read from the
    headers of a seeded sample of at most `sample` files; others are in-memory arrays of one size,
    taken from their first image. Returns
    ``min`` and ``max`` (per dimension, [width, height]), ``most_common`` [width, height] with its
    ``most_common_share`` of the files read, ``distinct`` sizes, ``read`` / ``total`` counts,
    ``sampled`` (True when not every file was read), ``unreadable`` (headers Pillow cannot parse)
    with an ``unreadable_example``.
    """
    from PIL import Image

    total = len(ds)
    if total == 0:
        return {"read": 0, "total": 0, "sampled": False}
    paths = getattr(ds, "paths", None)
    base, rows = getattr(ds, "base", None), getattr(ds, "rows", None)
    if paths is None and getattr(base, "paths", None) is not None and rows is not None:  # a row subset of files
        paths = [base.paths[int(i)] for i in rows]
    if paths is None:
        img = ds[0][0]
        h, w = int(img.shape[-2]), int(img.shape[-1])
        return {"min": [w, h], "max": [w, h], "most_common": [w, h], "most_common_share": 1.0, "distinct": 1,
                "read": total, "total": total, "sampled": False, "unreadable": 0, "source": "in-memory arrays"}
    if total > sample:
        picks = np.sort(np.random.default_rng(seed).choice(total, size=sample, replace=False))
    else:
        picks = np.arange(total)
    sizes: List[tuple] = []
    bad: List[str] = []
    for i in picks:
        try:
            with Image.open(paths[int(i)]) as im:  # parses the header only
                sizes.append(tuple(int(v) for v in im.size))
        except OSError:
            bad.append(str(paths[int(i)]))
    out: Dict[str, Any] = {"read": len(picks), "total": total, "sampled": len(picks) < total,
                           "unreadable": len(bad), "source": "file headers"}
    if bad:
        out["unreadable_example"] = bad[0]
    if sizes:
        arr = np.array(sizes)
        (common, count), = Counter(sizes).most_common(1)
        out.update({"min": arr.min(0).tolist(), "max": arr.max(0).tolist(), "most_common": list(common),
                    "most_common_share": count / len(sizes), "distinct": len(set(sizes))})
    return out


def summarize(cfg: dict, sample: int = 2000, name: Optional[str] = None) -> Dict[str, Any]:
    """Summary of the dataset of cfg's [data] section (or `name`), as the run will use it.

    Builds splits "train" (VOC2007: "trainval") and "heldout" with `dataset_from_config`, so layout
    mistakes raise the same UserError they would raise in training. Keys:

    - ``dataset``, ``root`` (absolute; None for embedded data), ``layout`` ("embedded", "image
      folders", "python batches", "binary files", "VOC2007 folder" or "files"), ``multilabel``;
    - ``splits``: {"train": ..., "heldout": ...}, each with ``split`` (the dataset's own split name),
      ``images``, ``sizes`` (see `image_sizes`) and, where it applies, ``description``;
    - ``heldout``: how the held-out split was obtained (`heldout_split`): ``source`` "split",
      "folder" or "seeded", ``description``, and ``fraction`` / ``seed`` for a seeded split;
    - ``classes``: ``count``, ``names`` (at most MAX_CLASS_NAMES), ``names_truncated``;
    - ``sample`` (the per-split cap on headers read), ``holdout_fraction``, ``seed``.
    """
    from ..config import validate

    cfg = validate(cfg)
    data = cfg["data"]
    name = name or data["dataset"]
    seed = int(cfg["run"]["seed"])
    # the training split the evaluation fits on (VOC2007: trainval), "train" elsewhere
    train_split = getattr(DATASETS.get(name), "eval_splits", ("train",))[0]
    train = dataset_from_config(cfg, train_split, name=name)
    held = dataset_from_config(cfg, HELDOUT, name=name)
    info = dict(getattr(held, "heldout", {"split": HELDOUT, "source": "split", "description": "held-out split"}))
    classes = [str(c) for c in getattr(train, "classes", [])]
    splits = {}
    for key, ds in (("train", train), (HELDOUT, held)):
        split = train_split if key == "train" else info["split"]
        splits[key] = {"split": split, "images": len(ds), "sizes": image_sizes(ds, sample, seed)}
    if info.get("source") == "seeded":
        splits["train"]["description"] = "train/ minus the held-out images"
    if getattr(train, "subset", None):
        s = train.subset
        note = f"a seeded per-class subset of {s['of']:,} (data.train_subset, seed {s['seed']})"
        prior = splits["train"].get("description")
        splits["train"]["description"] = f"{note}; {prior}" if prior else note
    root = data["root"] or None
    on_disk = root and name not in ("shapes", "shapes-multilabel", "digits")
    return {
        "dataset": name,
        "root": str(Path(root).expanduser().resolve()) if on_disk else None,
        "layout": _layout(name, train),
        "multilabel": bool(getattr(train, "multilabel", False)),
        "splits": splits,
        "heldout": info,
        "classes": {"count": len(classes), "names": classes[:MAX_CLASS_NAMES],
                    "names_truncated": len(classes) > MAX_CLASS_NAMES},
        "sample": int(sample),
        "holdout_fraction": float(data["holdout_fraction"]),
        "seed": seed,
    }


def _size_text(s: Dict[str, Any]) -> str:
    if "most_common" not in s:
        return "no readable images" if s.get("total") else "no images"
    lo, hi, mc = s["min"], s["max"], s["most_common"]
    text = (f"{mc[0]}x{mc[1]}" if lo == hi else
            f"width {lo[0]}-{hi[0]}, height {lo[1]}-{hi[1]}, most common {mc[0]}x{mc[1]} "
            f"({s['most_common_share']:.0%})")
    if s.get("source") == "file headers":
        text += (f" (headers of a seeded sample of {s['read']:,} of {s['total']:,} files)" if s["sampled"]
                 else f" (headers of all {s['total']:,} files)")
    if s.get("unreadable"):
        text += f"; {s['unreadable']} unreadable, e.g. {s['unreadable_example']}"
    return text


def format_summary(summary: Dict[str, Any]) -> str:
    """The summary of `summarize` as a few aligned lines for a terminal or a report."""
    c = summary["classes"]
    names = c["names"][:SHOWN_CLASS_NAMES]
    more = c["count"] - len(names)
    where = f" at {summary['root']}" if summary.get("root") else ""
    tr, ho = summary["splits"]["train"], summary["splits"][HELDOUT]
    lines = [
        f"dataset   {summary['dataset']}{where} ({summary['layout']}{', multi-label' if summary['multilabel'] else ''})",
        f"classes   {c['count']}: {', '.join(names)}{f' ... (+{more} more)' if more > 0 else ''}",
        f"train     {tr['images']:,} images" + (f" ({tr['description']})" if tr.get("description") else "")
        + (f" (split {tr['split']})" if tr["split"] != "train" else ""),
        f"held out  {ho['images']:,} images from {summary['heldout']['description']}",
        f"sizes     train {_size_text(tr['sizes'])}",
        f"          held out {_size_text(ho['sizes'])}",
    ]
    return "\n".join(lines)


def one_line(cfg: dict, sample: int = 200) -> str:
    """The run's data in one line, for the headers of benchmark tables."""
    s = summarize(cfg, sample=sample)
    tr, ho = s["splits"]["train"], s["splits"][HELDOUT]
    where = f" at {s['root']}" if s.get("root") else ""
    return (f"{s['dataset']}{where}: {tr['images']:,} training images"
            + (f" ({tr['description']})" if tr.get("description") else "")
            + f", {ho['images']:,} held-out images from {s['heldout']['description']}, {s['classes']['count']} classes")
