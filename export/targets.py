"""Deployment targets of the TVM export: LLVM target dicts, cross linkers, kernel blocking.

`x86-64` is tuned to the build machine's vector ISA (AVX-512 with VPOPCNTDQ, else AVX2, else
baseline x86-64); `x86-64-avx2` and `x86-64-avx512` pin one ISA for shipping to other
machines. ARM libraries are cross-linked with Debian's cross compilers.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserError
from .tvm_kernels import KernelConfig


@dataclass(frozen=True)
class Target:
    name: str
    llvm: Dict[str, object]
    cc: Optional[str]  # cross compiler executable; None = host toolchain
    package: Optional[str]  # Debian package providing `cc`
    objdump: Optional[str]
    elf_machine: str  # as `readelf -h` / python's ELF e_machine names it
    kernel: KernelConfig = field(default_factory=KernelConfig)

    def tvm_target(self):
        import tvm

        return tvm.target.Target(dict(self.llvm))

    def native(self) -> bool:
        """Whether libraries for this target load on this machine."""
        return self.cc is None and platform.machine() in ("x86_64", "AMD64")


def host_x86_features() -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def _x86(name: str, level: str) -> Target:
    llvm: Dict[str, object] = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
    if level == "avx512":
        llvm.update(mcpu="x86-64-v4", mattr=["+avx512vpopcntdq", "+avx512bitalg"])
    elif level == "avx2":
        llvm.update(mcpu="x86-64-v3")
    else:
        llvm.update(mcpu="x86-64-v2")  # SSE4.2 + POPCNT
    return Target(name, llvm, None, None, "objdump", "x86-64")


def x86_level(flags: List[str]) -> str:
    if "avx512_vpopcntdq" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "base"


def get_target(name: str) -> Target:
    if name in ("x86-64", "x86_64", "host"):
        return _x86("x86-64", x86_level(host_x86_features()))
    if name == "x86-64-avx512":
        return _x86(name, "avx512")
    if name == "x86-64-avx2":
        return _x86(name, "avx2")
    if name == "aarch64":
        return Target(name, {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
                      "aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", "aarch64-linux-gnu-objdump", "aarch64",
                      KernelConfig(lanes=8, xtile=7))
    if name == "armv7":
        return Target(name, {"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mcpu": "cortex-a7",
                             "mattr": ["+neon", "+vfp4"], "mfloat-abi": "hard"},
                      "arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf", "arm-linux-gnueabihf-objdump", "arm",
                      KernelConfig(lanes=4, xtile=7))
    raise UserError(f"unknown TVM target {name!r}; known: {', '.join(TARGET_NAMES)}")


TARGET_NAMES = ("x86-64", "x86-64-avx2", "x86-64-avx512", "aarch64", "armv7")


def require_toolchain(target: Target) -> None:
    """UserError naming the Debian package when a cross compiler is missing."""
    if target.cc and shutil.which(target.cc) is None:
        raise UserError(f"target {target.name} needs the cross compiler {target.cc}, which is not installed; "
                        f"install it with: apt-get install {target.package}")


ELF_MACHINES = {62: "x86-64", 183: "aarch64", 40: "arm"}


def elf_machine(path: Path) -> Optional[str]:
    """The machine of an ELF file from its header (e_machine), or None if it is not ELF."""
    head = Path(path).read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return None
    little = head[5] == 1
    return ELF_MACHINES.get(int.from_bytes(head[18:20], "little" if little else "big"), "other")
