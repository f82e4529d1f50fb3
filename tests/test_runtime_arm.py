"""The native runtime cross-built for aarch64 and armv7 (Debian cross compilers) and run under
qemu-user: bssl-infer there gives the same logits, bit for bit, as the x86 build through the
binding (the NEON kernels share the generic fused epilogue; the FP parts use fmaf and no FMA
contraction). qemu says nothing about ARM speed, only about results."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import bssl.runtime as rt
from bssl.deploy.model_file import write_model_file
from bssl.models import build_model

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
TARGETS = {
    "aarch64": ("aarch64-linux-gnu.cmake", "aarch64-linux-gnu-gcc", "qemu-aarch64", "/usr/aarch64-linux-gnu"),
    "armv7": ("arm-linux-gnueabihf.cmake", "arm-linux-gnueabihf-gcc", "qemu-arm", "/usr/arm-linux-gnueabihf"),
}

if not rt.available():
    pytest.skip("native runtime library not built (pip install -e .)", allow_module_level=True)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_cross_built_runtime_matches(target, tmp_path):
    toolchain, cc, qemu, sysroot = TARGETS[target]
    missing = [t for t in ("cmake", cc, qemu) if shutil.which(t) is None] + ([sysroot] if not Path(sysroot).is_dir() else [])
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: apt-get install -y gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user")
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(KERNELS), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        f"-DCMAKE_TOOLCHAIN_FILE={KERNELS / 'cmake' / toolchain}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["cmake", "--build", str(build), "--target", "bssl-infer"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stdout + r.stderr

    torch.manual_seed(0)
    m = build_model("reactnet-a", num_classes=10, input_size=32, width=0.25, pad_value=0.0).eval()
    write_model_file(m, tmp_path / "m.bssl")
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with rt.load(tmp_path / "m.bssl") as model:
        ref = model.run(x)[0]
    r = subprocess.run([qemu, "-L", sysroot, str(build / "bssl-infer"), str(tmp_path / "m.bssl"), "--input",
                        str(tmp_path / "x.npy"), "--json", "--top", "10", "--threads", "2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = np.zeros_like(ref)
    for i, img in enumerate(json.loads(r.stdout)["images"]):
        for t in img["top"]:
            got[i, t["class"]] = t["logit"]
    assert np.array_equal(got, ref)
