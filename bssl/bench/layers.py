"""`bssl bench layers`: the per-layer table of ReActNet-A, measured by benchmarks/bench_layers.py.

The kernels part owns that measurement (shapes, binary MACs, torch FP32 vs packed kernels vs
LCE per distinct layer, achieved MAC/s against the XOR+popcount peak); this is a thin wrapper
that runs its `main()` in this process, reads its JSON and renders a Markdown table.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import UserError
from ..utils import atomic_path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_layers.py"


def _load_script():
    if not SCRIPT.is_file():
        raise UserError(f"{SCRIPT} is missing; `bssl bench layers` runs it from a source checkout of bssl")
    spec = importlib.util.spec_from_file_location("bssl_bench_layers_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def layers_markdown(data: Dict[str, Any]) -> str:
    lines = [f"{data.get('model')} @ {data.get('input_size')} px, kernel path {data.get('isa')}, "
             f"peak XOR+popcount {data.get('peak_macs_per_s', 0) / 1e9:.0f} G binary MAC/s (1 core)", ""]
    for t, run in (data.get("runs") or {}).items():
        rows = run.get("layers", [])
        has_lce = all("lce_s" in r for r in rows) and rows
        head = ["layer (k s cin->cout @hxw)", "n", "input shape", "BOPs (M)", "torch FP32 ms", "kernels ms", "conv ms",
                "speedup", "G MAC/s"] + (["LCE ms", "x LCE"] if has_lce else [])
        lines += [f"threads = {t} ({run.get('clock', 'wall')} clock)", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for r in rows:
            cells = [f"{r['k']}x{r['k']} s{r['stride']} {r['c']}->{r['o']} @{r['h']}x{r['w']}", str(r["count"]),
                     f"1x{r['c']}x{r['h']}x{r['w']}", f"{r['macs'] / 1e6:.1f}", f"{r['torch_s'] * 1e3:.3f}",
                     f"{r['kernels_s'] * 1e3:.3f}", f"{r['conv_s'] * 1e3:.3f}", f"{r['torch_s'] / r['kernels_s']:.1f}x",
                     f"{r['macs'] / r['conv_s'] / 1e9:.0f}"]
            if has_lce:
                cells += [f"{r['lce_s'] * 1e3:.3f}", f"{r['lce_s'] / r['kernels_s']:.1f}x"]
            lines.append("| " + " | ".join(cells) + " |")
        s = run.get("summary") or {}
        if s:
            extra = f", {s['speedup_vs_lce']:.1f}x LCE" if "speedup_vs_lce" in s else ""
            lines += ["", f"all binary convs: torch {s['torch_s'] * 1e3:.2f} ms, kernels {s['kernels_s'] * 1e3:.2f} ms "
                          f"({s['speedup_vs_torch']:.1f}x torch{extra}), {s['kernels_macs_per_s'] / 1e9:.0f} G MAC/s", ""]
    return "\n".join(lines) + "\n"


def layer_report(threads: int = 1, runs: int = 15, warmup: int = 0, out_dir: os.PathLike | str = "runs/bench",
                 report_path: Optional[os.PathLike | str] = None, backends: Optional[List[str]] = None,
                 model: str = "reactnet-a", input_size: int = 224, width: float = 1.0) -> Dict[str, Any]:
    """Run the per-layer measurement; return its numbers plus `markdown`, and write JSON + Markdown.

    `runs` maps to the script's samples per candidate (best kept); LCE columns are added when
    `backends` names lce (or is None and the .larq-venv exists). `warmup` is accepted for a
    uniform signature: the script warms every candidate up itself.
    """
    from .backends.lce import venv_python

    mod = _load_script()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(report_path) if report_path else out_dir / "layers.json"
    want_lce = ("lce" in backends) if backends else venv_python() is not None
    argv = ["--model", model, "--input-size", str(input_size), "--width", str(width), "--threads", str(threads),
            "--repeats", str(max(1, runs)), "--json", str(json_path)]
    if want_lce:
        argv.append("--lce")
    rc = mod.main(argv)
    if rc not in (0, None) or not json_path.is_file():
        raise UserError(f"benchmarks/bench_layers.py failed (exit {rc}); run it directly to see why")
    data = json.loads(json_path.read_text())
    md = layers_markdown(data)
    with atomic_path(out_dir / "layers.md") as tmp:
        tmp.write_text("# Per-layer binary convolutions\n\n" + md)
    return {**data, "markdown": md, "files": {"json": str(json_path), "markdown": str(out_dir / "layers.md")}}
