"""ctypes binding of the native runtime (model.bssl files, docs/model-format.md); numpy only.

    import bssl.runtime as rt
    model = rt.load("exports/model.bssl", threads=1)
    logits, features = model.run(x)     # x: float32 (N, C, H, W) or (C, H, W), normalised

This module does not import torch: a board with Python and numpy runs a student through it.
The library (`libbssl_runtime.so`) is built with the kernels by the package build; it is looked
for at BSSL_RUNTIME_LIB, next to the kernel library in the installed `bssl/kernels` folder, and
in the checkout's build folders. Errors (missing library, bad file, wrong input) raise
`bssl.errors.UserError` with the runtime's message.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .errors import UserError
from .libpaths import candidate_paths as library_candidates, first_file, open_library

_NAMES = {"linux": "libbssl_runtime.so", "darwin": "libbssl_runtime.dylib", "win32": "bssl_runtime.dll"}
LIB_NAME = _NAMES.get(sys.platform, "libbssl_runtime.so")
FORMAT_VERSION = 1
_BUILD_HINT = ("build it with `pip install -e .` (or `pip install -e . --no-build-isolation` in a dev checkout), "
               "or point BSSL_RUNTIME_LIB at libbssl_runtime.so")

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None


def candidate_paths() -> List[Path]:
    return library_candidates(LIB_NAME, "BSSL_RUNTIME_LIB", [Path(__file__).resolve().parent / "kernels" / LIB_NAME])


def find_library() -> Optional[Path]:
    return first_file(candidate_paths())


def _signatures() -> dict:
    c, P = ctypes, ctypes.c_void_p
    return {
        "bssl_runtime_format_version": (c.c_int, []),
        "bssl_model_last_error": (c.c_char_p, []),
        "bssl_model_load": (c.c_int, [c.c_char_p, c.POINTER(P)]),
        "bssl_model_load_memory": (c.c_int, [c.c_char_p, c.c_size_t, c.POINTER(P)]),
        "bssl_model_free": (None, [P]),
        "bssl_model_input_shape": (c.c_int, [P, c.POINTER(c.c_int32), c.POINTER(c.c_int32), c.POINTER(c.c_int32)]),
        "bssl_model_num_classes": (c.c_int32, [P]),
        "bssl_model_feature_dim": (c.c_int32, [P]),
        "bssl_model_normalization": (c.c_int, [P, P, P]),
        "bssl_model_name": (c.c_char_p, [P]),
        "bssl_model_class_name": (c.c_char_p, [P, c.c_int32]),
        "bssl_model_arena_bytes": (c.c_int64, [P]),
        "bssl_model_set_threads": (c.c_int, [P, c.c_int32]),
        "bssl_model_run": (c.c_int, [P, P, c.c_int32, P, P]),
    }


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            path = find_library()
            if path is None:
                raise UserError(f"the native runtime library {LIB_NAME} was not found; {_BUILD_HINT}")
            try:
                handle = open_library(path, _signatures())
            except (OSError, AttributeError) as exc:
                raise UserError(f"cannot load the native runtime {path}: {exc}; {_BUILD_HINT}") from None
            if handle.bssl_runtime_format_version() != FORMAT_VERSION:
                raise UserError(f"{path} reads model format {handle.bssl_runtime_format_version()}, this binding "
                                f"expects {FORMAT_VERSION}; rebuild: {_BUILD_HINT}")
            _lib = handle
    return _lib


def available() -> bool:
    try:
        lib()
        return True
    except UserError:
        return False


def _error() -> str:
    return (lib().bssl_model_last_error() or b"").decode("utf-8", "replace")


class Model:
    """A loaded model.bssl. One `run` at a time per Model (its activation memory is shared)."""

    def __init__(self, handle: int, source: str):
        self._h = ctypes.c_void_p(handle)
        self.source = source
        L = lib()
        c, h, w = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
        L.bssl_model_input_shape(self._h, ctypes.byref(c), ctypes.byref(h), ctypes.byref(w))
        self.input_shape: Tuple[int, int, int] = (c.value, h.value, w.value)
        self.num_classes = int(L.bssl_model_num_classes(self._h))
        self.feature_dim = int(L.bssl_model_feature_dim(self._h))
        mean, std = np.zeros(c.value, np.float32), np.zeros(c.value, np.float32)
        L.bssl_model_normalization(self._h, mean.ctypes.data, std.ctypes.data)
        self.mean, self.std = mean, std
        self.name = (L.bssl_model_name(self._h) or b"").decode("utf-8", "replace")
        self.class_names = [(L.bssl_model_class_name(self._h, i) or b"").decode("utf-8", "replace")
                            for i in range(self.num_classes)]
        self.arena_bytes = int(L.bssl_model_arena_bytes(self._h))
        self.threads = 1
        self._run_lock = threading.Lock()

    def set_threads(self, threads: int) -> None:
        if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or not 1 <= threads <= 64:
            raise UserError(f"threads must be an integer in 1..64, got {threads!r}")
        if lib().bssl_model_set_threads(self._h, int(threads)) != 0:
            raise UserError(_error())
        self.threads = int(threads)

    def run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """float32 (N, C, H, W) or (C, H, W) -> (logits (N, classes), features (N, feature_dim))."""
        if self._h is None:
            raise UserError(f"{self.source}: the model was closed")
        a = np.asarray(x)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or tuple(a.shape[1:]) != self.input_shape:
            raise UserError(f"{self.source}: input must be (N, {', '.join(map(str, self.input_shape))}) float32, "
                            f"got shape {tuple(np.shape(x))}")
        if a.dtype != np.float32:
            if a.dtype.kind != "f":
                raise UserError(f"{self.source}: input must be floating point, got {a.dtype}")
            a = a.astype(np.float32)
        a = np.ascontiguousarray(a)
        n = int(a.shape[0])
        logits = np.empty((n, self.num_classes), np.float32)
        feats = np.empty((n, self.feature_dim), np.float32)
        with self._run_lock:
            rc = lib().bssl_model_run(self._h, a.ctypes.data, n, logits.ctypes.data, feats.ctypes.data)
        if rc != 0:
            raise UserError(f"{self.source}: {_error()}")
        return logits, feats

    __call__ = run

    def close(self) -> None:
        if self._h is not None and self._h.value:
            lib().bssl_model_free(self._h)
        self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"bssl.runtime.Model({self.name!r}, input {self.input_shape}, {self.num_classes} classes, "
                f"features {self.feature_dim}, arena {self.arena_bytes / 2**20:.1f} MiB)")


def load(path, threads: int = 1) -> Model:
    """Load a model.bssl file (every check of docs/model-format.md; UserError on any failure)."""
    L = lib()
    h = ctypes.c_void_p()
    p = os.fsencode(os.fspath(path))
    if L.bssl_model_load(p, ctypes.byref(h)) != 0:
        raise UserError(_error())
    m = Model(h.value, str(path))
    if threads != 1:
        m.set_threads(threads)
    return m


def load_bytes(data: bytes, threads: int = 1, name: str = "<memory>") -> Model:
    """Load a model.bssl image from memory (the bytes are copied)."""
    L = lib()
    h = ctypes.c_void_p()
    if L.bssl_model_load_memory(bytes(data), len(data), ctypes.byref(h)) != 0:
        raise UserError(f"{name}: {_error()}")
    m = Model(h.value, name)
    if threads != 1:
        m.set_threads(threads)
    return m


__all__ = ["Model", "load", "load_bytes", "available", "find_library", "FORMAT_VERSION"]
