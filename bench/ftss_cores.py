"""The FTSS's sans-IO cores alone: work per carried frame, with no kernel, disk or other process.

    python bench/ftss_cores.py [--frames N] [--batch B] [--baseline REV] [--callgrind] [--json]

An ``FtssCore`` and two ``ServerUnit``s, built from the http-kill scenario exactly as the
daemons build them, are wired back to back in one process: app1 hands unit 1 full-size frames
``--batch`` at a time (and app2 one TCP-ACK-sized frame per two), every frame a core emits is
handed to its peer, and each turn ends as a daemon's does (``flush``, timers, then the turn's
records made durable: ``on_durable_batch`` where the core has it). What is measured is the
cores' Python per frame delivered to an application stack.

``bench/ftss_tcp.py`` measures the whole path, but on a shared 2-core box its µs move ±20%
between identical runs. ``--callgrind`` counts instructions instead (valgrind, twice: N and 3N
frames, so start-up cancels out), which repeat whatever else the machine does: the figure to
compare revisions of the cores by. ``--baseline REV`` runs the same driver on a ``git
worktree`` of REV in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when a test loads this file
from baseline import ROOT, ftss_topology, worktree  # noqa: E402

WORKER = "cores-worker"  # argv[1] of this script run as one measurement
APP1, APP2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _frame(dst: str, src: str, size: int) -> bytes:
    return bytes.fromhex(dst.replace(":", "") + src.replace(":", "")) + b"\x08\x00" + bytes(size)


def drive(frames: int, batch: int) -> dict:
    """Run the three cores (whichever ftsslab is on sys.path) over ``frames`` data frames."""
    from ftsslab.ftss.actions import Persist, Transmit
    from ftsslab.ftss.sim_nodes import ftss_factory, server_factory
    from ftsslab.lab.scenario import load_scenario_text

    scenario = load_scenario_text(ftss_topology(), "cores.yaml")
    nodes = {n.name: n for n in scenario.nodes}
    cores = {"ftss": ftss_factory(nodes["ftss"], scenario)[0](),
             "srv1": server_factory(nodes["srv1"], scenario)(1),
             "srv2": server_factory(nodes["srv2"], scenario)(1)}
    wire = {}
    for ln in scenario.links:
        wire[(ln.a.node, ln.a.iface)] = (ln.b.node, ln.b.iface)
        wire[(ln.b.node, ln.b.iface)] = (ln.a.node, ln.a.iface)
    inbox: dict[str, list] = {n: [] for n in cores}
    carried = 0

    def run(node: str, actions: list, records: list) -> None:
        nonlocal carried
        for a in actions:
            if isinstance(a, Transmit):
                peer, port = wire[(node, a.port)]
                if peer in cores:
                    inbox[peer].append((port, a.frame))
                else:
                    carried += 1
            elif isinstance(a, Persist):
                records.append(a.record_id)

    def turn(now: float) -> bool:
        busy = False
        for name, core in cores.items():
            frames_in, inbox[name], records = inbox[name], [], []
            for port, frame in frames_in:
                busy = True
                run(name, core.on_frame(port, frame, now), records)
            if hasattr(core, "flush"):
                run(name, core.flush(now), records)
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                run(name, core.on_timer(now), records)
            if records and hasattr(core, "on_durable_batch"):
                run(name, core.on_durable_batch(records, now), [])
            else:
                for rid in records:
                    run(name, core.on_durable(rid, now), [])
        return busy

    now = 1000.0
    for _ in range(50):  # HELLO, STATUS: the routing table and the units' sync
        now += 0.03
        turn(now)
    data, ack = _frame(APP2, APP1, 1500), _frame(APP1, APP2, 52)
    carried = 0
    start = time.process_time()
    for first in range(0, frames, batch):
        for j in range(min(batch, frames - first)):
            inbox["srv1"].append(("stack", data))
            if j % 2:
                inbox["srv2"].append(("stack", ack))
        now += 0.0005
        while turn(now):
            pass
    cpu = time.process_time() - start
    return {"carried": carried, "us_per_frame": cpu / carried * 1e6 if carried else None}


def measure(tree: Path, frames: int, batch: int, callgrind: bool) -> dict:
    """One worker on ``tree`` (run from its root); with ``callgrind``, instructions per carried
    frame from two runs under valgrind."""
    env = dict(os.environ, PYTHONPATH=str(tree))

    def worker(n: int, prefix: list[str]) -> tuple[dict, str]:
        res = subprocess.run([*prefix, sys.executable, str(Path(__file__).resolve()), WORKER,
                              str(n), str(batch)], env=env, cwd=tree, capture_output=True,
                             text=True, timeout=1800)
        if res.returncode != 0:
            raise SystemExit(f"{tree}: {res.stderr.strip()[-500:]}")
        return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr

    out, _ = worker(frames, [])
    if callgrind:
        counts = []
        for n in (frames, 3 * frames):
            with tempfile.TemporaryDirectory() as tmp:
                got, err = worker(n, ["valgrind", "--tool=callgrind",
                                      f"--callgrind-out-file={tmp}/cg.out"])
            refs = re.search(r"I\s+refs:\s+([\d,]+)", err)
            if refs is None:
                raise SystemExit(f"valgrind gave no instruction count: {err[-300:]}")
            counts.append((int(refs.group(1).replace(",", "")), got["carried"]))
        (i1, c1), (i3, c3) = counts
        out["instructions_per_frame"] = (i3 - i1) / (c3 - c1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000, help="data frames app1 sends")
    ap.add_argument("--batch", type=int, default=16, help="frames per turn")
    ap.add_argument("--baseline", metavar="REV", help="also measure the cores of REV")
    ap.add_argument("--callgrind", action="store_true",
                    help="count instructions under valgrind (slow: use --frames 1000)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with worktree(args.baseline) as base:
        trees = {"now": ROOT} | ({"base": base} if base else {})
        results = {k: measure(t, args.frames, args.batch, args.callgrind)
                   for k, t in trees.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for k, r in results.items():
        extra = (f", {r['instructions_per_frame']:,.0f} instructions"
                 if "instructions_per_frame" in r else "")
        print(f"{k:5s} {r['us_per_frame']:6.1f} µs CPU per carried frame{extra} "
              f"({r['carried']} carried)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == WORKER:
        print(json.dumps(drive(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
