"""Build a statically linked `bssl-infer` for a deployment target, with the Debian cross compilers.

    from bssl.kernels.cross import build_infer
    exe = build_infer("aarch64")        # a cached build: Path to the static binary

Targets: `x86-64` (the host compiler; the kernels dispatch on CPU features at run time),
`aarch64` (gcc-aarch64-linux-gnu), `armv7` (gcc-arm-linux-gnueabihf, hard float; NEON checked at
run time). The build uses this package's own C sources and CMake files (`kernels/`), so an
installed copy builds the same program as the checkout. Builds are cached per target under
`$BSSL_CACHE_DIR/infer` (default `~/.cache/bssl/infer`), keyed by the sources and the compiler's
version, so exporting several models for one target compiles once; `build.log` beside each
binary keeps the compiler's output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class InferTarget:
    name: str
    toolchain: Optional[str]  # file in kernels/cmake, None for the host compiler
    cc: str
    package: str  # the Debian package that provides cc
    emulator: Optional[Tuple[str, ...]]  # how to run the binary here (None: natively)
    elf_machine: int  # e_machine of the ELF header


TARGETS: Dict[str, InferTarget] = {
    "x86-64": InferTarget("x86-64", None, "gcc", "gcc", None, 62),
    "aarch64": InferTarget("aarch64", "aarch64-linux-gnu.cmake", "aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu",
                           ("qemu-aarch64",), 183),
    "armv7": InferTarget("armv7", "arm-linux-gnueabihf.cmake", "arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf",
                         ("qemu-arm",), 40),
}


class BuildError(RuntimeError):
    """A missing tool (message names the package to install) or a failed build."""


def get_target(name: str) -> InferTarget:
    if name not in TARGETS:
        raise BuildError(f"unknown bssl-infer target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


def check_tools(target: InferTarget) -> None:
    """Raise BuildError naming what to install when cmake or the (cross) compiler is missing."""
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not installed; building bssl-infer needs it (apt-get install -y cmake, or pip install cmake)")
    if shutil.which(target.cc) is None:
        raise BuildError(f"{target.cc} is not installed; building bssl-infer for {target.name} needs it "
                         f"(apt-get install -y {target.package})")


def source_dir() -> Path:
    if not (HERE / "CMakeLists.txt").is_file() or not (HERE / "src" / "infer_main.c").is_file():
        raise BuildError(f"the C sources of the runtime are not beside {__file__}; reinstall bssl")
    return HERE


def _build_key(target: InferTarget) -> str:
    h = hashlib.sha256(target.name.encode())
    src = source_dir()
    files = [Path(__file__), src / "CMakeLists.txt", *sorted((src / "src").glob("*.[ch]")), *sorted((src / "cmake").glob("*.cmake"))]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    ver = subprocess.run([target.cc, "--version"], capture_output=True, text=True)
    h.update(ver.stdout.encode())
    return h.hexdigest()[:20]


def cache_root() -> Path:
    env = os.environ.get("BSSL_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bssl"
    return base / "infer"


def build_infer(target_name: str, *, use_cache: bool = True, timeout_s: float = 900) -> Path:
    """Path to a statically linked bssl-infer for `target_name`, built (or taken from the cache)."""
    target = get_target(target_name)
    check_tools(target)
    src = source_dir()
    final = cache_root() / f"{target.name}-{_build_key(target)}" / "bssl-infer"
    if use_cache and final.is_file():
        return final
    final.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"bssl-infer-{target.name}-", dir=final.parent.parent) as tmp:
        build = Path(tmp) / "build"
        cmd = ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBSSL_STATIC_INFER=ON"]
        if target.toolchain:
            cmd.append(f"-DCMAKE_TOOLCHAIN_FILE={src / 'cmake' / target.toolchain}")
        else:
            cmd.append(f"-DCMAKE_C_COMPILER={target.cc}")
        log = []
        for step in (cmd, ["cmake", "--build", str(build), "--target", "bssl-infer", "-j", "2"]):
            r = subprocess.run(step, capture_output=True, text=True, timeout=timeout_s)
            log.append(f"$ {' '.join(step)}\n{r.stdout}{r.stderr}")
            if r.returncode != 0:
                tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
                raise BuildError(f"building bssl-infer for {target.name} failed ({' '.join(step[:2])}):\n{tail}")
        exe = build / "bssl-infer"
        machine = int.from_bytes(exe.read_bytes()[18:20], "little")
        if machine != target.elf_machine:
            raise BuildError(f"the {target.name} build of bssl-infer is an ELF for machine {machine}, "
                             f"not {target.elf_machine}; check the cross compiler")
        final.parent.mkdir(parents=True, exist_ok=True)
        (final.parent / "build.log").write_text("\n".join(log))  # the tests read it for compiler warnings
        staged = Path(tmp) / "bssl-infer"
        shutil.copy2(exe, staged)
        os.replace(staged, final)
    return final


def emulator_command(target_name: str) -> Optional[list]:
    """The command prefix that runs a target binary on this machine: [] natively, the qemu-user
    program for ARM targets when installed (static binaries need no sysroot), else None."""
    target = get_target(target_name)
    if target.emulator is None:
        import platform

        return [] if platform.machine().lower() in ("x86_64", "amd64") else None
    return list(target.emulator) if shutil.which(target.emulator[0]) else None


__all__ = ["TARGETS", "InferTarget", "BuildError", "build_infer", "check_tools", "emulator_command", "get_target"]
