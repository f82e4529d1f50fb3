"""Where the compiled libraries (kernels, native runtime) are looked for; no torch, no numpy.

An editable install maps ``bssl/kernels`` into site-packages while the Python files stay in the
checkout, so the installed folder, every ``sys.path`` entry and the checkout's scikit-build-core
build trees are searched, after an explicit path from an environment variable.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple


def candidate_paths(lib_name: str, env_var: str, first: Iterable[Path] = ()) -> List[Path]:
    """Paths to try in order: $env_var alone when set, else `first`, the installed and built copies."""
    env = os.environ.get(env_var)
    if env:
        return [Path(env)]
    checkout = Path(__file__).resolve().parent.parent
    out = list(first)
    out += [Path(entry) / "bssl" / "kernels" / lib_name for entry in sys.path if entry]
    out += [Path(p) for p in sorted(glob.glob(str(checkout / "build" / "*" / lib_name)))]
    return list(dict.fromkeys(out))


def first_file(paths: Iterable[Path]) -> Optional[Path]:
    return next((p for p in paths if p.is_file()), None)


def open_library(path: Path, signatures: Dict[str, Tuple[object, list]]) -> ctypes.CDLL:
    """Load a shared library and declare each function's (restype, argtypes).

    Raises OSError when the file cannot be loaded and AttributeError when a function is missing
    (an older build): the caller turns both into its own message with what to do."""
    handle = ctypes.CDLL(str(path))
    for name, (res, args) in signatures.items():
        fn = getattr(handle, name)
        fn.restype = res
        fn.argtypes = args
    return handle
