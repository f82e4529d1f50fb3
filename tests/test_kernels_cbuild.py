"""Build the kernel test program natively and for ARM (cross compilers + qemu-user) and run it:
every compiled-in path must equal the scalar reference bit for bit."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"

TARGETS = {
    "native": (None, None, None),
    "aarch64": ("aarch64-linux-gnu.cmake", "aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "armv7": ("arm-linux-gnueabihf.cmake", "arm-linux-gnueabihf-gcc", "qemu-arm"),
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_kernel_test_program(target, tmp_path):
    toolchain, cc, qemu = TARGETS[target]
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if toolchain:
        missing = [t for t in (cc, qemu) if shutil.which(t) is None]
        if missing:
            pytest.skip(
                f"{target}: {', '.join(missing)} not installed; "
                "apt-get install -y gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user"
            )
    cmd = ["cmake", "-S", str(KERNELS), "-B", str(tmp_path), "-DBSSL_KERNELS_TESTS=ON", "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    if toolchain:
        cmd.append(f"-DCMAKE_TOOLCHAIN_FILE={KERNELS / 'cmake' / toolchain}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(tmp_path), "--target", "test_kernels"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    exe = [str(tmp_path / "test_kernels"), "80"]
    if qemu:
        exe.insert(0, qemu)  # the test binary is static, no sysroot needed
    r = subprocess.run(exe, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK:" in r.stdout
    expect = {"native": None, "aarch64": "neon", "armv7": "neon"}[target]
    if expect:
        assert f"testing: scalar {expect}" in r.stdout, r.stdout
