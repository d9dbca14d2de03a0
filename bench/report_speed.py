"""``ftsslab report`` on a large capture against tshark's own flow graph, same file, same run.

    python bench/report_speed.py [--frames 100000] [--rounds 3] [--json]

The capture cycles every reference frame of the six families (pcaps/reference: FTSS, FC, XAP,
TCH, RoCE, I2O), FRAMES of them, each noted as ftsslab's captures note a frame (its link
ends and its step), so the report dissects, groups and draws the mix a lab run gives. Each
round runs, in a rotated order, the whole command ``ftsslab report`` (Python start-up,
reading, dissecting the budget, counting the rest, rendering, writing) and ``tshark -q -z
flow,any,network`` (Wireshark's flow graph as text: what a user would otherwise ask for).
Times are wall clock and the child's CPU (user + system, from ``resource``: what the box's
load does not inflate); ``ratio`` is tshark's time / ftsslab's (> 1: ftsslab is faster).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftsslab.pcapng import Interface, PcapNgWriter, load_capture  # noqa: E402

FAMILIES = ("ftss", "fc", "xap", "tch", "roce", "i2o")
CLI = "import sys; from ftsslab.cli import main; sys.argv[0] = 'ftsslab'; sys.exit(main())"


def write_capture(path: Path, frames: int) -> int:
    """``frames`` reference frames in a cycle, 10 µs apart, noted "a:eth0 -> b:eth0" (or the
    other way for frames that go back), a step per thousand; returns the file's size."""
    pool = []
    for family in FAMILIES:
        cap = load_capture(ROOT / "pcaps" / "reference" / f"{family}.pcapng")
        pool += [p.data for p in cap.packets()]
    iface = Interface("a:eth0", "link a:eth0 <-> b:eth0 (mtu 9000)")
    with path.open("wb") as fh:
        w = PcapNgWriter(fh, comments=["ftsslab scenario bench (bench.yaml) on sim"])
        for i in range(frames):
            data = pool[i % len(pool)]
            where = "a:eth0 -> b:eth0" if i % 2 == 0 else "b:eth0 -> a:eth0"
            w.packet(iface, data, 1_700_000_000 * 10**9 + i * 10_000,
                     [f"{where} [step steps[{i // 1000}]]"])
    return path.stat().st_size


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one whole command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(frames: int = 100_000, rounds: int = 3) -> dict:
    tshark = shutil.which("tshark")
    with tempfile.TemporaryDirectory(prefix="ftsslab-report-bench-") as tmp:
        cap, html = Path(tmp) / "big.pcapng", Path(tmp) / "big.html"
        size = write_capture(cap, frames)
        commands = {"ftsslab": [sys.executable, "-c", CLI, "report", str(cap), "-o", str(html)]}
        if tshark:
            commands["tshark"] = [tshark, "-q", "-n", "-z", "flow,any,network", "-r", str(cap)]
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for r in range(rounds):
            names = list(commands)
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(timed(commands[name]))
        html_size = html.stat().st_size
    out = {"frames": frames, "capture_bytes": size, "report_bytes": html_size, "rounds": rounds}
    for name, got in times.items():
        out[name] = {"wall_s": statistics.median(w for w, _ in got),
                     "cpu_s": statistics.median(c for _, c in got),
                     "wall_range": [min(w for w, _ in got), max(w for w, _ in got)]}
    if "tshark" in out:
        out["ratio_wall"] = out["tshark"]["wall_s"] / out["ftsslab"]["wall_s"]
        out["ratio_cpu"] = out["tshark"]["cpu_s"] / out["ftsslab"]["cpu_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.frames, args.rounds)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['frames']:,} frames ({res['capture_bytes'] / 1e6:.1f} MB capture, "
          f"{res['report_bytes'] / 1e6:.1f} MB report), median of {res['rounds']} rounds")
    for name in ("ftsslab", "tshark"):
        if name in res:
            r = res[name]
            print(f"  {name:8} wall {r['wall_s']:6.2f} s (range {r['wall_range'][0]:.2f}-"
                  f"{r['wall_range'][1]:.2f})  cpu {r['cpu_s']:6.2f} s")
    if "ratio_wall" in res:
        print(f"  tshark / ftsslab: wall {res['ratio_wall']:.2f}x, cpu {res['ratio_cpu']:.2f}x")


if __name__ == "__main__":
    main()
