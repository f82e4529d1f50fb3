"""Binary conv layers of a bssl student: packed kernels vs torch FP32 conv2d (vs LCE), side by side.

    python benchmarks/bench_layers.py [--lce] [--threads 1 2] [--json out.json]

The measurement lives in the package (bssl.bench.layers, also `bssl bench layers`); this script
is its command line for a source checkout. `--help` lists the options.
"""

import sys

from bssl.bench.layers import main


if __name__ == "__main__":
    from bssl.errors import exit_status

    sys.exit(exit_status(main, "bench_layers.py"))
