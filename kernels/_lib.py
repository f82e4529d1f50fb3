"""Finding and loading the compiled kernel library (a plain C ABI, loaded with ctypes).

The package build (scikit-build-core + CMake) installs ``libbssl_kernels.so`` into the
``bssl/kernels`` package directory; in an editable install that directory lives in
site-packages while this file stays in the checkout, so several places are searched.
``BSSL_KERNELS_LIB`` names the library explicitly (e.g. a cross-built or debug one).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from pathlib import Path
from typing import List, Optional

from bssl.libpaths import candidate_paths as library_candidates, first_file, open_library

ABI_VERSION = 3
_NAMES = {"linux": "libbssl_kernels.so", "darwin": "libbssl_kernels.dylib", "win32": "bssl_kernels.dll"}
LIB_NAME = _NAMES.get(sys.platform, "libbssl_kernels.so")

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None


def candidate_paths() -> List[Path]:
    """Where the library is looked for, in order."""
    here = Path(__file__).resolve().parent
    first = [here / LIB_NAME]
    try:  # editable installs map the package onto several directories
        import importlib.resources as ir

        first.append(Path(str(ir.files("bssl.kernels") / LIB_NAME)))
    except Exception:  # a missing or odd resource reader only removes one candidate
        pass
    return library_candidates(LIB_NAME, "BSSL_KERNELS_LIB", first)


def find_library() -> Optional[Path]:
    return first_file(candidate_paths())


class KernelsUnavailable(ImportError):
    """The compiled library is missing or does not match this binding."""


def _signatures() -> dict:
    c = ctypes
    P = c.c_void_p
    return {
        "bssl_abi_version": (c.c_int, []),
        "bssl_last_error": (c.c_char_p, []),
        "bssl_isa_name": (c.c_char_p, [c.c_int]),
        "bssl_isa_supported": (c.c_int, [c.c_int]),
        "bssl_isa_get": (c.c_int, []),
        "bssl_isa_set": (c.c_int, [c.c_int]),
        "bssl_isa_best": (c.c_int, []),
        "bssl_pack_f32": (c.c_int, [P, c.c_int64, c.c_int32, P, P]),
        "bssl_blocked_weights_words": (c.c_int64, [c.c_int32, c.c_int64]),
        "bssl_block_weights": (c.c_int, [P, c.c_int32, c.c_int64, P]),
        "bssl_bconv2d": (
            c.c_int,
            [P, c.c_int32, c.c_int32, c.c_int32, c.c_int32, P, c.c_int32, c.c_int32, c.c_int32,
             c.c_int32, c.c_int32, c.c_int32, c.c_int32, P, P, P, P, P, c.c_int32],
        ),
        "bssl_bconv2d_f32": (
            c.c_int,
            [P, P, c.c_int32, c.c_int32, c.c_int32, c.c_int32, P, c.c_int32, c.c_int32, c.c_int32,
             c.c_int32, c.c_int32, c.c_int32, P, P, P, P, P, c.c_int32],
        ),
        "bssl_bgemm": (
            c.c_int,
            [P, c.c_int64, c.c_int32, P, c.c_int32, c.c_int32, c.c_int32, P, P, P, P, P, c.c_int32],
        ),
        "bssl_thread_min_work_get": (c.c_int64, []),
        "bssl_thread_min_work_set": (c.c_int, [c.c_int64]),
        "bssl_peak_xor_popcount": (c.c_uint64, [c.c_int64, c.POINTER(c.c_int64)]),
    }


def lib() -> ctypes.CDLL:
    """The loaded library; raises KernelsUnavailable with what to do when it is missing."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        path = find_library()
        if path is None:
            raise KernelsUnavailable(
                f"the bssl kernel library {LIB_NAME} was not found (looked next to {Path(__file__).parent} "
                "and in site-packages/bssl/kernels); build it with `pip install -e . --no-build-isolation` "
                "or point BSSL_KERNELS_LIB at it"
            )
        try:
            handle = open_library(path, _signatures())
        except (OSError, AttributeError) as exc:
            raise KernelsUnavailable(f"could not load {path}: {exc}; rebuild with `pip install -e . --no-build-isolation`") from None
        if handle.bssl_abi_version() != ABI_VERSION:
            raise KernelsUnavailable(
                f"{path} has kernel ABI {handle.bssl_abi_version()}, this binding needs {ABI_VERSION}; "
                "rebuild with `pip install -e . --no-build-isolation`"
            )
        _lib = handle
        return _lib


def last_error() -> str:
    return lib().bssl_last_error().decode(errors="replace")
