"""Whole commands against the C tools, on the same capture in the same run:
``ftsslab replay --topspeed`` vs ``tcpreplay --topspeed``, ``ftsslab merge`` vs ``mergecap``.

    python bench/replay.py [--frames 200000] [--rounds 5] [--baseline DIR] [--json]

A capture of FRAMES Ethernet frames of mixed sizes (7:4:1 of 60, 590 and 1514 bytes, a
simple IMIX) is written once with ftsslab's pcapng writer, and split in two by
alternate frames for the merges; a two-host veth lab is brought up; then each round runs
every command once, in an order rotated by one each round. A time is wall clock from
process start to exit (Python start-up, imports, reading the file, sending), so a
command's rate is FRAMES / that time, and ``ratio`` is ftsslab's rate / the C tool's in
the same round (> 1: ftsslab is faster); medians and min-max over the rounds. tcpreplay
runs in h1's namespace through ``nsenter`` (its cost is shown); ftsslab enters it itself.
``delivered`` is the share of the frames h2's eth0 received.

``--baseline DIR`` also runs the ftsslab of another tree in the same rounds, e.g. the
last commit: ``mkdir /tmp/replay-base && git archive HEAD | tar -x -C /tmp/replay-base``.

Needs root, ``tcpreplay`` (Debian: ``apt-get install tcpreplay``) and ``mergecap`` (with
tshark); ``--skip-missing`` runs without the ones that are not installed. The lab, the
files and every child process are removed on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftsslab.lab.model import Endpoint, Link, Node, Scenario  # noqa: E402
from ftsslab.lab.veth.backend import VethBackend  # noqa: E402
from ftsslab.lab.veth.names import NETNS_DIR  # noqa: E402
from ftsslab.lab.veth.netns import call_in_netns  # noqa: E402
from ftsslab.pcapng import Interface, PcapNgWriter  # noqa: E402

H1 = Endpoint("h1", "eth0", "02:00:00:00:01:00", "10.1.0.1/24")
H2 = Endpoint("h2", "eth0", "02:00:00:00:02:00", "10.1.0.2/24")
IMIX = (60,) * 7 + (590,) * 4 + (1514,)
EXPERIMENTAL = b"\x88\xb5"  # IEEE local experimental ethertype: h2's stack drops it
CLI = "import sys; from ftsslab.cli import main; sys.argv[0] = 'ftsslab'; sys.exit(main())"


def write_capture(path: Path, n: int, *, offset: int = 0, every: int = 1,
                  name: str = "h1:eth0") -> None:
    """Frames ``offset``, ``offset + every``, ... (``n`` of them) of the IMIX sequence from
    h1 to h2, frame ``i`` carrying ``i`` and stamped ``i`` microseconds after the epoch."""
    head = bytes.fromhex(H2.mac.replace(":", "") + H1.mac.replace(":", "")) + EXPERIMENTAL
    bodies = [bytes(size - len(head) - 4) for size in IMIX]
    with path.open("wb") as fh:
        w = PcapNgWriter(fh)
        iface = Interface(name)
        for i in range(offset, offset + n * every, every):
            w.packet(iface, head + struct.pack("!I", i) + bodies[i % len(IMIX)],
                     1_700_000_000 * 10**9 + i * 1000)


def _rx_packets(ifname: str) -> int:
    with open("/proc/thread-self/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == ifname:
                return int(rest.split()[1])
    raise KeyError(ifname)


def run_timed(argv: list[str], env: dict | None, cwd: str) -> tuple[float, str]:
    """(wall seconds from start to exit, stdout); a failing command is an error."""
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
                         check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
    return seconds, res.stdout


def _count(pattern: str) -> Callable[[str], int]:
    return lambda out: int(re.search(pattern, out).group(1))


def commands(lab: VethBackend, work: Path, trees: dict[str, Path],
             skip_missing: bool) -> dict[str, tuple[list[str], dict | None, Callable | None]]:
    """name -> (argv, env, the packet count it reports from its stdout, or None)."""
    enter = ["nsenter", f"--net={NETNS_DIR}/{lab.namespace('h1')}"]
    cap, a, b = (str(work / f) for f in ("replay.pcapng", "a.pcapng", "b.pcapng"))
    cmds: dict = {}
    for tool, package in (("tcpreplay", "tcpreplay"), ("mergecap", "tshark")):
        if shutil.which(tool) is None and not skip_missing:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install {package}; "
                             f"or --skip-missing)")
    if shutil.which("tcpreplay"):
        cmds["replay: tcpreplay"] = ([*enter, "tcpreplay", "--topspeed", "-q", "-i", "eth0",
                                      cap], None, _count(r"Successful packets:\s+(\d+)"))
    if shutil.which("mergecap"):
        cmds["merge: mergecap"] = (["mergecap", "-w", str(work / "out-mergecap.pcapng"), a, b],
                                   None, None)
    for label, tree in trees.items():
        env = os.environ | {"PYTHONPATH": str(tree)}
        cmds[f"replay: ftsslab{label}"] = (
            [sys.executable, "-c", CLI, "replay", cap, "--into", "h1:eth0", "--topspeed",
             "--lab", lab.lab_id, "--json"], env, lambda out: json.loads(out)["packets"])
        cmds[f"merge: ftsslab{label}"] = (
            [sys.executable, "-c", CLI, "merge", str(work / "out-ftsslab.pcapng"), a, b], env,
            _count(r"wrote (\d+) packets"))
    return cmds


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench(n: int, rounds: int, trees: dict[str, Path], skip_missing: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="ftsslab-bench-replay-") as tmp:
        work = Path(tmp)
        write_capture(work / "replay.pcapng", n)
        write_capture(work / "a.pcapng", (n + 1) // 2, every=2)
        write_capture(work / "b.pcapng", n // 2, offset=1, every=2, name="h2:eth0")
        lab = VethBackend(capture=False)
        try:
            lab.up(Scenario("replay-bench", "<bench>", "", (Node("h1", "host"),
                            Node("h2", "host")), (Link(H1, H2),), (), ()))
            cmds = commands(lab, work, trees, skip_missing)
            h2 = lab.namespace("h2")
            probe = ["nsenter", f"--net={NETNS_DIR}/{lab.namespace('h1')}", "true"]
            nsenter = summary([run_timed(probe, None, tmp)[0] for _ in range(5)])
            names = list(cmds)
            times: dict[str, list[float]] = {k: [] for k in names}
            delivered: dict[str, list[float]] = {k: [] for k in names if k.startswith("replay")}
            for r in range(rounds):
                for k in names[r % len(names):] + names[:r % len(names)]:
                    argv, env, count = cmds[k]
                    rx = call_in_netns(h2, _rx_packets, "eth0") if k in delivered else 0
                    seconds, out = run_timed(argv, env, tmp)
                    if count is not None and count(out) != n:
                        raise RuntimeError(f"{k}: {count(out)} packets, {n} expected")
                    times[k].append(seconds)
                    if k in delivered:
                        time.sleep(0.05)  # h2's backlog drains
                        delivered[k].append((call_in_netns(h2, _rx_packets, "eth0") - rx) / n)
        finally:
            lab.down()
    rows = {}
    for k, ts in times.items():
        ref = {"replay": "replay: tcpreplay", "merge": "merge: mergecap"}[k.split(":")[0]]
        rows[k] = {"seconds": summary(ts), "pps": n / statistics.median(ts),
                   "ratio": (summary([c / t for c, t in zip(times[ref], ts, strict=True)])
                             if ref in times else None),
                   "delivered": statistics.median(delivered[k]) if k in delivered else None}
    return {"frames": n, "rounds": rounds, "nsenter_seconds": nsenter, "commands": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="another tree's ftsslab to run as well")
    ap.add_argument("--skip-missing", action="store_true",
                    help="run without tcpreplay/mergecap if they are not installed")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    trees = {"": ROOT} if a.baseline is None else {" (this tree)": ROOT,
                                                    " (baseline)": a.baseline.resolve()}
    for tree in trees.values():  # as an installed package is: where PYTHONDONTWRITEBYTECODE
        # is set, an editable tree would compile every module on each start (7 ms here)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                        str(tree / "ftsslab"), str(tree / "layers")], check=True,
                       stdout=subprocess.DEVNULL)
    res = bench(a.frames, a.rounds, trees, a.skip_missing)
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"{res['frames']:,} frames, {res['rounds']} rounds, whole commands (wall clock); "
          f"ratio = rate / the C tool's rate in the same round; nsenter alone "
          f"{res['nsenter_seconds']['median']:.3f} s")
    print(f"{'command':<30}{'median s':>9}{'min-max s':>14}{'pps':>10}{'ratio':>7}"
          f"{'min-max':>12}{'delivered':>10}")
    for k, r in res["commands"].items():
        s, q = r["seconds"], r["ratio"]
        ratio = f"{q['median']:>7.2f}{q['min']:>6.2f}-{q['max']:<5.2f}" if q else " " * 19
        got = f"{r['delivered']:>10.1%}" if r["delivered"] is not None else ""
        print(f"{k:<30}{s['median']:>9.3f}{s['min']:>7.3f}-{s['max']:<6.3f}{r['pps']:>10,.0f}"
              f"{ratio}{got}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
