"""llvm-mca model of the NEON binary-conv inner loop on ARM cores, and a Raspberry Pi 4 estimate.

    python benchmarks/arm_mca.py [--cpus cortex-a72,cortex-a76,neoverse-n1,cortex-a55] [--update-doc]

What it does (a model, not a measurement; nothing runs on ARM hardware):

1. compiles kernels/src/neon.c with aarch64-linux-gnu-gcc and the package build's flags (-O3
   -DNDEBUG -ffp-contract=off) to assembly and extracts the binary conv's inner loop (the
   innermost loop with the most CNT instructions: one activation word per pixel against the
   weight words of 8 output channels, MR=4 pixels: EOR -> CNT -> UADALP);
2. analyses it with llvm-mca for each -mcpu: the simulated cycles per iteration (dependencies,
   issue width, pipes), and the loop's own ceiling, llvm-mca's Block RThroughput (the cycles its
   instruction mix needs on the busiest pipe, dependencies ignored);
3. does the same for an anchor: a hand-written loop of the same tile (4 pixels x 8 channels of 64
   bits) in the EOR -> CNT -> ADDP -> UADALP style that larq-compute-engine describes for its
   aarch64 binary GEMM (two CNT results are pairwise added into one byte vector before the
   widening accumulate, halving the UADALPs; activations broadcast with LD1R). Written here from
   that description;
4. estimates ReActNet-A at 224 on a Raspberry Pi 4 (Cortex-A72, 1.5 GHz, 1 thread): BOPs /
   (modelled binary MACs per cycle x 1.5e9) + FP MACs / (modelled FP MACs per cycle of the
   runtime's FMLA conv loop, extracted from runtime.c the same way, x 1.5e9). Packing, epilogues
   and pooling are left out, so it is a floor of the model, beside larq-compute-engine's
   published QuickNet latency on the same board (45.0 ms).

llvm-mca's CPU models: LLVM schedules cortex-a72 and cortex-a76 with its Cortex-A57 model (the
two lines are then equal); neoverse-n1, a core derived from the Cortex-A76, has its own model and
is the better stand-in for the A76. The script prints which model each -mcpu got. Without
llvm-mca it says so and exits 0 (apt-get install -y llvm); without the cross compiler it analyses
the anchor alone.

--update-doc replaces the generated section of docs/arm.md (between its arm_mca markers).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "kernels" / "src"
DOC = ROOT / "docs" / "arm.md"
BEGIN, END = "<!-- arm_mca:begin -->", "<!-- arm_mca:end -->"
CC = "aarch64-linux-gnu-gcc"
CFLAGS = ["-O3", "-DNDEBUG", "-ffp-contract=off", "-fno-asynchronous-unwind-tables"]
CPUS = ["cortex-a72", "cortex-a76", "neoverse-n1", "cortex-a55"]
ITERATIONS = 500
PI4_GHZ = 1.5
LCE_QUICKNET_PI4_MS = 45.0  # larq-compute-engine's published QuickNet latency, Raspberry Pi 4, 1 thread

# The anchor: one iteration = one 64-bit activation word of each of 4 pixels (x0..x3, broadcast
# with LD1R) against the words of 8 output channels (x4, 4 q registers); per pixel 4 EOR, 4 CNT,
# 2 ADDP (two channel pairs' byte counts into one vector), 2 UADALP into 16-bit accumulators
# (v16..v23). Temporaries rotate over v8..v15 and v24..v31 so that pixels do not serialise.
ANCHOR_PIXEL = """\
eor  v{t0}.16b, v{a}.16b, v4.16b
eor  v{t1}.16b, v{a}.16b, v5.16b
eor  v{t2}.16b, v{a}.16b, v6.16b
eor  v{t3}.16b, v{a}.16b, v7.16b
cnt  v{t0}.16b, v{t0}.16b
cnt  v{t1}.16b, v{t1}.16b
cnt  v{t2}.16b, v{t2}.16b
cnt  v{t3}.16b, v{t3}.16b
addp v{t0}.16b, v{t0}.16b, v{t1}.16b
addp v{t2}.16b, v{t2}.16b, v{t3}.16b
uadalp v{c0}.8h, v{t0}.16b
uadalp v{c1}.8h, v{t2}.16b
"""


def anchor_loop() -> str:
    body = ["ld1r {v0.2d}, [x0], #8", "ld1r {v1.2d}, [x1], #8", "ld1r {v2.2d}, [x2], #8", "ld1r {v3.2d}, [x3], #8",
            "ldp  q4, q5, [x4]", "ldp  q6, q7, [x4, #32]", "add  x4, x4, #256"]
    temps = [(8, 9, 10, 11), (12, 13, 14, 15), (24, 25, 26, 27), (28, 29, 30, 31)]
    for px, (t0, t1, t2, t3) in enumerate(temps):
        body += ANCHOR_PIXEL.format(a=px, t0=t0, t1=t1, t2=t2, t3=t3, c0=16 + 2 * px, c1=17 + 2 * px).splitlines()
    body += ["subs x5, x5, #1", "b.ne .Lanchor"]
    return "\n".join(body) + "\n"


def find_mca() -> Optional[str]:
    """The newest llvm-mca on PATH (llvm-mca-NN beats a plain llvm-mca of an older LLVM)."""
    best, best_ver = None, -1
    for d in sorted({p for p in (shutil.which("llvm-mca"),) if p} | set(map(str, Path("/usr/bin").glob("llvm-mca-*")))):
        m = re.search(r"llvm-mca-(\d+)$", d)
        ver = int(m.group(1)) if m else 0
        if ver > best_ver:
            best, best_ver = d, ver
    return best


def compile_asm(source: Path) -> str:
    r = subprocess.run([CC, *CFLAGS, "-S", f"-I{SRC}", str(source), "-o", "-"], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"{CC} failed on {source.name}: {r.stderr[-800:]}")
    return r.stdout


BRANCH = re.compile(r"^\s+(b\.\w+|b|bne|beq|cbnz|cbz|tbnz|tbz)\s+(?:.*,\s*)?(\.L\w+)\s*$")
LABEL = re.compile(r"^(\.L\w+):")


def extract_loop(asm: str, key: str) -> Dict[str, Any]:
    """Of the innermost loops (a label and a backward branch to it, with no other such loop inside),
    the one with the most `key` instructions: its instructions without directives and labels
    (forward branches inside stay, as not taken)."""
    lines = asm.splitlines()
    labels: Dict[str, int] = {}
    spans = []
    for i, line in enumerate(lines):
        m = LABEL.match(line)
        if m:
            labels[m.group(1)] = i
            continue
        b = BRANCH.match(line)
        if b and b.group(2) in labels:
            spans.append((labels[b.group(2)], i, b.group(2)))
    best = None
    for start, end, label in spans:
        if any(start <= s0 and e0 <= end and (s0, e0) != (start, end) for s0, e0, _ in spans):
            continue  # an outer loop
        body = [ln.strip() for ln in lines[start + 1:end + 1]
                if ln.strip() and not ln.strip().startswith(".") and not LABEL.match(ln.strip())]
        n = sum(1 for ln in body if ln.split()[0] == key)
        if n and (best is None or n > best[0]):
            best = (n, body, label)
    if best is None:
        raise RuntimeError(f"no loop with {key} instructions found")
    return {"label": best[2], "instructions": best[1], "count": best[0]}


def run_mca(mca: str, code: str, cpu: str) -> Dict[str, Any]:
    r = subprocess.run([mca, "-mtriple=aarch64-linux-gnu", f"-mcpu={cpu}", f"-iterations={ITERATIONS}"],
                       input=code, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"llvm-mca -mcpu={cpu} failed: {r.stderr[-800:]}")
    out = r.stdout

    def num(name):
        m = re.search(rf"^{name}:\s+([\d.]+)", out, flags=re.M)
        return float(m.group(1)) if m else None

    names = dict(re.findall(r"^\[([\d.]+)\]\s+-\s+(\S+)", out, flags=re.M))
    pressure: Dict[str, float] = {}
    m = re.search(r"Resource pressure per iteration:\n(.*)\n(.*)\n", out)
    if m:
        heads = re.findall(r"\[([\d.]+)\]", m.group(1))
        vals = m.group(2).split()
        for h, v in zip(heads, vals):
            name = names.get(h, h) + (f".{h.split('.')[1]}" if "." in h else "")
            pressure[name] = 0.0 if v == "-" else float(v)
    busiest = max(pressure, key=pressure.get) if pressure else ""
    model = next(iter(names.values()), "")
    return {"cpu": cpu, "iterations": num("Iterations"), "total_cycles": num("Total Cycles"),
            "block_rthroughput": num("Block RThroughput"), "instructions": num("Instructions"),
            "llvm_model": re.sub(r"Unit.*$", "", model), "busiest": busiest,
            "busiest_cycles": pressure.get(busiest)}


def analyse(mca: str, name: str, code: str, work: int, unit: str, cpus: List[str]) -> List[Dict[str, Any]]:
    rows = []
    for cpu in cpus:
        r = run_mca(mca, code, cpu)
        per_iter = r["total_cycles"] / r["iterations"]
        rows.append({**r, "loop": name, "work_per_iteration": work, "unit": unit, "cycles_per_iteration": per_iter,
                     "per_cycle": work / per_iter, "ceiling_per_cycle": work / r["block_rthroughput"]})
    return rows


def profile_counts(input_size: int = 224) -> Dict[str, float]:
    from bssl.profile import profile

    p = profile("reactnet-a", input_size=input_size)
    return {"bops": float(p["bops"]), "fp_macs": float(p["flops"])}


def run(cpus: List[str]) -> Dict[str, Any]:
    mca = find_mca()
    if mca is None:
        return {"skipped": "llvm-mca is not installed (apt-get install -y llvm)"}
    ver = subprocess.run([mca, "--version"], capture_output=True, text=True).stdout
    res: Dict[str, Any] = {"llvm_mca": mca, "llvm_version": (re.search(r"version ([\d.]+)", ver) or [None, "?"])[1],
                           "cpus": cpus, "rows": [], "notes": []}
    anchor = anchor_loop()
    n_cnt = anchor.count("\ncnt ") + anchor.startswith("cnt ")
    res["anchor_asm"] = anchor
    res["rows"] += analyse(mca, "anchor: EOR-CNT-ADDP-UADALP (hand-written)", anchor, 128 * n_cnt, "binary MACs", cpus)
    if shutil.which(CC) is None:
        res["notes"].append(f"{CC} is not installed (apt-get install -y gcc-aarch64-linux-gnu): bssl's own loop "
                            "was not analysed")
        return res
    loop = extract_loop(compile_asm(SRC / "neon.c"), "cnt")
    res["bssl_loop"] = loop
    code = "\n".join(loop["instructions"]) + "\n"
    res["rows"] = analyse(mca, "bssl neon.c tile_neon (gcc -O3)", code, 128 * loop["count"], "binary MACs",
                          cpus) + res["rows"]
    fp = extract_loop(compile_asm(SRC / "runtime.c"), "fmla")
    res["fp_loop"] = fp
    fp_code = "\n".join(fp["instructions"]) + "\n"
    res["fp_rows"] = analyse(mca, "bssl runtime.c FP conv (FMLA)", fp_code, 4 * fp["count"], "FP MACs", ["cortex-a72"])
    counts = profile_counts()
    a72 = {r["loop"]: r for r in res["rows"] if r["cpu"] == "cortex-a72"}
    fp_rate = res["fp_rows"][0]["per_cycle"]
    fp_ms = counts["fp_macs"] / (fp_rate * PI4_GHZ * 1e9) * 1e3
    res["pi4"] = {"ghz": PI4_GHZ, **counts, "fp_macs_per_cycle": fp_rate, "fp_ms": fp_ms,
                  "loops": {name: {"macs_per_cycle": r["per_cycle"],
                                   "binary_ms": counts["bops"] / (r["per_cycle"] * PI4_GHZ * 1e9) * 1e3,
                                   "total_ms": counts["bops"] / (r["per_cycle"] * PI4_GHZ * 1e9) * 1e3 + fp_ms}
                            for name, r in a72.items()},
                  "lce_quicknet_ms": LCE_QUICKNET_PI4_MS}
    return res


def markdown(res: Dict[str, Any]) -> str:
    if "skipped" in res:
        return f"`benchmarks/arm_mca.py`: {res['skipped']}.\n"
    lines = [f"### llvm-mca model of the binary conv inner loop (`benchmarks/arm_mca.py`, LLVM {res['llvm_version']})", "",
             "A model, not a measurement: llvm-mca simulates the loop in steady state on each CPU's scheduling "
             f"model ({ITERATIONS} iterations, all loads hitting L1, no branch misses). \"Modelled\" is binary MACs "
             "per iteration / simulated cycles per iteration; \"ceiling\" divides by llvm-mca's Block RThroughput "
             "instead, the cycles the loop's instruction mix needs on its busiest pipe with dependencies ignored.", "",
             "| loop | -mcpu | LLVM model | binary MACs / iteration | cycles / iteration | modelled MACs / cycle "
             "| ceiling MACs / cycle | modelled / ceiling | busiest resource (cycles / iteration) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['loop']} | {r['cpu']} | {r['llvm_model']} | {r['work_per_iteration']} | "
                     f"{r['cycles_per_iteration']:.2f} | {r['per_cycle']:.1f} | {r['ceiling_per_cycle']:.1f} | "
                     f"{r['per_cycle'] / r['ceiling_per_cycle']:.2f} | {r['busiest']} ({r['busiest_cycles']:.2f}) |")
    loop = res.get("bssl_loop")
    if loop:
        ins = loop["instructions"]
        mix = {k: sum(1 for i in ins if i.split()[0] == k) for k in ("eor", "cnt", "uadalp", "dup", "ldr", "ldp", "ld1r")}
        lines += ["", f"bssl's loop as gcc -O3 emits it ({len(ins)} instructions per iteration): "
                      + ", ".join(f"{v} {k.upper()}" for k, v in mix.items() if v)
                      + ", plus the loop counter, the fold check (every 4095 words the 16-bit counts are widened, out "
                        "of line) and the loop branch. The anchor does the same work in "
                      + f"{res['anchor_asm'].count(chr(10))} instructions: LD1R broadcasts each activation word "
                        "(gcc loads it with LDR and copies it with DUP, an extra vector op per pixel) and ADDP merges "
                        "two channel pairs' byte counts before one UADALP."]
    p = res.get("pi4")
    if p:
        lines += ["", f"### Raspberry Pi 4 estimate (a model): ReActNet-A, 224 px, 1 thread, Cortex-A72 at {p['ghz']} GHz", "",
                  f"{p['bops']:.3g} binary MACs and {p['fp_macs']:.3g} FP MACs (bssl.profile). FP part: the runtime's "
                  f"FMLA conv loop (runtime.c, 4 pixels x 8 channels) models at {p['fp_macs_per_cycle']:.2f} FP MACs "
                  f"per cycle on cortex-a72, {p['fp_ms']:.2f} ms. Packing, epilogues and pooling are not in it.", "",
                  "| binary loop | modelled MACs / cycle (A72) | binary part ms | + FP part ms | estimate ms |",
                  "|---|---|---|---|---|"]
        for name, v in p["loops"].items():
            lines.append(f"| {name} | {v['macs_per_cycle']:.1f} | {v['binary_ms']:.2f} | {p['fp_ms']:.2f} | "
                         f"{v['total_ms']:.2f} |")
        lines += ["", f"Beside it, larq-compute-engine's published QuickNet latency on the Raspberry Pi 4 (1 thread): "
                      f"{p['lce_quicknet_ms']:.1f} ms, a measurement of a different network (its own BOPs and FP layers), "
                      "so the comparison says where the model puts bssl's loop, not which network is faster. On x86 "
                      "the runtime takes about 2x its floor (the bench_runtime table in docs/model-format.md); a board "
                      "measurement (`bssl-infer --repeat 100 --json`, imported with `bssl bench --import-json`) is what "
                      "settles it."]
    for n in res.get("notes", []):
        lines += ["", f"Note: {n}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", default=",".join(CPUS), help="comma-separated llvm-mca -mcpu values")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this file")
    ap.add_argument("--update-doc", action="store_true", help=f"replace the arm_mca section of {DOC.name}")
    args = ap.parse_args(argv)
    res = run([c.strip() for c in args.cpus.split(",") if c.strip()])
    md = markdown(res)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if args.update_doc and "skipped" not in res:
        from bssl.utils import replace_section

        replace_section(DOC, BEGIN, END, md)
    return 0


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "arm_mca.py"))
