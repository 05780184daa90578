"""Cost of one PNG export: a Chromium started per image versus one kept for the process.

kaleido (>= 1) renders static images in a Chromium. Without its sync server every
``write_image`` starts and stops one; ``save_figure`` exports the first image of a process
that way and keeps a Chromium for the rest. This times ``--images`` exports of a typical
workbench figure (a few lines with error bars) each way, in two fresh interpreters, and
prints the seconds per image and their ratio.

    .venv/bin/python benchmarks/bench_figures.py [--images 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

WORKER = """
import json, sys, time, warnings
import numpy as np, plotly.graph_objects as go
from mrl_analysis.figures import save

kept, n, out = sys.argv[1] == "kept", int(sys.argv[2]), sys.argv[3]
if not kept:  # every export a one-shot, as before save_figure kept a Chromium
    save._browser_dropped = True
sizes = 2 ** np.arange(10)
fig = go.Figure(
    [
        go.Scatter(x=sizes, y=np.linspace(0.3, 0.9, 10) - 0.05 * k,
                   error_y={"type": "data", "array": np.full(10, 0.01)}, name=f"model {k}")
        for k in range(4)
    ]
).update_xaxes(type="log")
times = []
for i in range(n):
    t = time.perf_counter()
    save.save_figure(fig, None, f"f{i}", out, ["png"])
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def run(mode: str, images: int) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, mode, str(images), out],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    one_shot, kept = run("one-shot", args.images), run("kept", args.images)
    per_one_shot = sum(one_shot) / len(one_shot)
    per_kept = sum(kept) / len(kept)
    print(f"one-shot Chromium per image: {per_one_shot:.2f} s per PNG ({args.images} images)")
    print(
        f"Chromium kept for the process: {per_kept:.2f} s per PNG "
        f"(first {kept[0]:.2f} s, then {sum(kept[1:]) / max(1, len(kept) - 1):.2f} s)"
    )
    print(f"ratio one-shot / kept: {per_one_shot / per_kept:.1f}x")


if __name__ == "__main__":
    main()
