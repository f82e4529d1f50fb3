"""Fuzzing the model.bssl loader in an AddressSanitizer + UndefinedBehaviorSanitizer build.

The runtime and the scalar kernels are compiled with plain `cc` into a temporary folder together
with kernels/test/fuzz_runtime.c, which loads (and, when they load, runs) thousands of damaged
copies of a valid small model: flipped bytes with and without a recomputed CRC-32, truncations,
extensions and extreme header words. Any sanitizer report, crash or leak fails the test.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bssl.deploy.model_file import write_model_file
from bssl.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "kernels" / "src"
ITERATIONS = 1500


def _cc():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(tmp: Path) -> Path:
    cc = _cc()
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH")
    probe = tmp / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    res = subprocess.run([cc, *san, str(probe), "-o", str(tmp / "probe")], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"{cc} cannot build with -fsanitize=address,undefined: {res.stderr.strip()[:200]}")
    exe = tmp / "fuzz_runtime"
    # scalar kernels only (no BSSL_HAVE_* paths): the loader is what is fuzzed
    cmd = [cc, "-std=gnu11", "-O1", "-g", *san, "-ffp-contract=off", "-DBSSL_NO_CLONES", "-Wall", "-Wextra",
           "-I", str(SRC), str(ROOT / "kernels" / "test" / "fuzz_runtime.c"), str(SRC / "runtime.c"),
           str(SRC / "dispatch.c"), str(SRC / "scalar.c"), "-o", str(exe), "-pthread", "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return exe


def _model(path: Path, name: str, pad_value: float) -> None:
    torch.manual_seed(0)
    # the smallest maps each family allows (final map 2x2): loads and runs in well under a millisecond
    m = build_model(name, num_classes=4, input_size=32 if name in ("reactnet-a", "reactnet-b", "reactnet-c") else 16,
                    width=0.125, pad_value=pad_value, stem="small")
    write_model_file(m.eval(), path)


@pytest.mark.parametrize("name,pad_value", [("reactnet-a", 0.0), ("birealnet-18", 1.0)])
def test_damaged_files_never_crash(tmp_path, name, pad_value):
    exe = _build(tmp_path)
    model = tmp_path / "model.bssl"
    _model(model, name, pad_value)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1",
               UBSAN_OPTIONS="print_stacktrace=1")
    res = subprocess.run([str(exe), str(model), str(ITERATIONS), "7"], capture_output=True, text=True, env=env,
                         timeout=600)
    print(res.stdout.strip())
    assert res.returncode == 0, res.stderr[-4000:]
    assert "runtime error" not in res.stderr and "Sanitizer" not in res.stderr, res.stderr[-4000:]
    assert f"iterations {ITERATIONS}" in res.stdout
