"""The native runtime cross-built for aarch64 and armv7 (Debian cross compilers, statically
linked by `bssl export --format bssl --target T`) and run under qemu-user: bssl-infer there gives
the same logits, bit for bit, as the x86 build through the binding (the NEON kernels share the
generic fused epilogue; the FP parts use fmaf and no FMA contraction). qemu says nothing about
ARM speed, only about results."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import bssl.runtime as rt
from bssl.export import export_model
from bssl.kernels.cross import build_infer, get_target
from bssl.models import build_model

QEMU = {"aarch64": "qemu-aarch64", "armv7": "qemu-arm"}
MODELS = {
    "reactnet-a": dict(width=0.25, stem="small", pad_value=0.0),
    "birealnet-18": dict(width=1.0, stem="small", pad_value=1.0),
}

if not rt.available():
    pytest.skip("native runtime library not built (pip install -e .)", allow_module_level=True)


def _tools(target):
    spec = get_target(target)
    missing = [t for t in ("cmake", spec.cc, QEMU[target]) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: apt-get install -y {spec.package} qemu-user cmake")


def run_folder(folder: Path, x: np.ndarray, qemu: str, threads: int = 2) -> np.ndarray:
    """Logits of every class from the folder's static bssl-infer under qemu-user."""
    np.save(folder.parent / "x.npy", x)
    with rt.load(folder / "model.bssl") as m:
        ncls = m.num_classes
    r = subprocess.run([qemu, str(folder / "bssl-infer"), str(folder / "model.bssl"), "--input",
                        str(folder.parent / "x.npy"), "--json", "--top", str(ncls), "--threads", str(threads)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = np.full((len(x), ncls), np.nan, np.float32)
    for i, img in enumerate(json.loads(r.stdout)["images"]):
        for t in img["top"]:
            got[i, t["class"]] = t["logit"]
    return got


@pytest.mark.parametrize("target", sorted(QEMU))
def test_build_has_no_warnings(target):
    _tools(target)
    exe = build_infer(target)
    log = (exe.parent / "build.log").read_text()
    assert "warning" not in log.lower(), log[-3000:]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("target", sorted(QEMU))
def test_exported_folder_matches_x86(target, name, tmp_path):
    _tools(target)
    torch.manual_seed(0)
    m = build_model(name, num_classes=10, input_size=32, **MODELS[name]).eval()
    res = export_model(m, "bssl", tmp_path, target=target, check_samples=4)
    folder = tmp_path / f"bssl-{target}"
    assert res["path"] == str(folder) and sorted(p.name for p in folder.iterdir()) == ["README.txt", "bssl-infer", "model.bssl"]
    assert res["target_check"]["identical"], res["target_check"]
    head = (folder / "bssl-infer").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == get_target(target).elf_machine
    assert "./bssl-infer model.bssl --input x.npy --repeat 100 --json" in (folder / "README.txt").read_text()

    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with rt.load(folder / "model.bssl") as model:
        ref = model.run(x)[0]
    got = run_folder(folder, x, QEMU[target])
    assert not np.isnan(got).any()
    # popcounts are integers and the float parts round identically (fmaf, no contraction): equal bits
    assert np.array_equal(got, ref), float(np.abs(got - ref).max() / np.abs(ref).max())
