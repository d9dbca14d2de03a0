"""TCP through the FTSS against a plain switch, and the FTSS's CPU per carried frame.

    python bench/ftss_tcp.py [--mbytes N] [--rounds R] [--baseline REV] [--floor] [--json]
                                                                                (root)

Every round measures, in the same run and on the same box:

- **switch**: app1 -> app2 through a learning switch on veth (the baseline path);
- **ftss**: the same unmodified programs (Python sockets, real kernel TCP) through two
  server units and the FTSS, which commits every frame to its mirrored store before it
  acknowledges and delivers it;
- **base** (``--baseline REV``): the FTSS path of an earlier revision, from a
  ``git worktree`` of it, with this same harness;
- **floor** (``--floor``): the same chain of three processes and four veth links, each
  process a relay with no logic: the FTSS's packet ring in, one ``send`` per frame out. It
  is what a Python data path costs before any work is done on a frame: ftss - floor is the
  FTSS's logic, store and acknowledgments, the share a compiled data path would take over.

Throughput is the receiver's MB/s. CPU per carried frame is the CPU time (user + system,
from ``/proc/<pid>/stat``: the kernel's per-process accounting, far less sensitive to a
loaded machine than wall time) that the FTSS and both server processes spent during the
transfer, over the frames the two servers' stacks received through the FTSS (the TAPs'
``rx_packets``: data and TCP acknowledgments). The figures to compare are the ratios
ftss/switch and ftss/base, and µs per frame, each within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline import ROOT, ftss_topology, worktree

RECEIVER = ("import socket,sys,time\n"  # argv[1]: where it writes the MB/s it received at
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('10.0.0.2', 5001)); s.listen(1); c,_=s.accept(); n=0; t=None\n"
            "while True:\n"
            "    b=c.recv(1<<20)\n"
            "    if not b: break\n"
            "    t=t or time.perf_counter(); n+=len(b)\n"
            "open(sys.argv[1],'w').write(str(n/1e6/(time.perf_counter()-t)))\n")
SENDER = ("import socket\n"
          "data=b'x'*({mb}*1000000); s=socket.create_connection(('10.0.0.2', 5001))\n"
          "s.sendall(data); s.close()\n")


def chain(name: str, middle: dict[str, str], links: list[str], first: str, last: str) -> str:
    """A lab of app1 (10.0.0.1) on ``first`` and app2 (10.0.0.2) on ``last`` (each
    "node:iface"), with the ``middle`` nodes (name: kind) and ``links`` ("a:if b:if")."""
    kinds = {"app1": "host", **middle, "app2": "host"}
    ends = [f"""  - endpoints:
      - {{node: app{i}, interface: eth0, mac: "02:00:00:00:00:0{i}", ipv4: 10.0.0.{i}/24}}
      - {{node: {at.split(":")[0]}, interface: {at.split(":")[1]}}}
""" for i, at in ((1, first), (2, last))]
    return (f"name: {name}\nnodes:\n" + "".join(f"  {n}: {{kind: {k}}}\n" for n, k in kinds.items())
            + "links:\n" + ends[0] + "".join(f'  - "{ln}"\n' for ln in links) + ends[1])


SWITCH = chain("bench-switch", {"s1": "switch"}, [], "s1:p1", "s1:p2")
# the floor's chain: hosts named as the FTSS topology's processes, so their splits compare
FLOOR = chain("bench-floor", {"srv1": "host", "ftss": "host", "srv2": "host"},
              ["srv1:fa ftss:a1", "ftss:a2 srv2:fa"], "srv1:stack", "srv2:stack")
RELAYS = {"srv1": ("stack", "fa"), "ftss": ("a1", "a2"), "srv2": ("fa", "stack")}
RELAY = ("import selectors,sys\n"  # argv[1:3]: the two interfaces it relays between
         "from ftsslab.lab.veth.ring import PacketRing\n"
         "a,b=(PacketRing(i,1500) for i in sys.argv[1:3]); sel=selectors.DefaultSelector()\n"
         "sel.register(a,selectors.EVENT_READ,b); sel.register(b,selectors.EVENT_READ,a)\n"
         "while True:\n"
         "    for k,_ in sel.select():\n"
         "        send=k.data.send\n"
         "        for f in k.fileobj.frames(256): send(f)\n")
WORKER = "bench-worker"  # argv[1] of this script run as one measurement
MEASURED = ("ftss", "srv1", "srv2")  # the processes whose CPU is counted


def topology(kind: str) -> str:
    """The http-kill scenario's two servers and FTSS, or a switch or the relays' chain in
    their place."""
    if kind == "switch":
        return SWITCH
    if kind == "floor":
        return FLOOR
    return ftss_topology()


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` so far."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / tick, system / tick


def rx_packets(ns: str, iface: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "cat",
                          f"/sys/class/net/{iface}/statistics/rx_packets"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def worker(kind: str, mb: int) -> dict:
    """One transfer on a fresh lab (runs with whichever ftsslab is on sys.path)."""
    from ftsslab.lab.scenario import load_scenario_text
    from ftsslab.lab.veth.backend import VethBackend

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(topology(kind))
        backend = VethBackend(capture=False)
        backend.up(load_scenario_text(path.read_text(), str(path)))
        try:
            result = Path(tmp) / "mbps"
            if kind == "floor":
                for node, ifaces in RELAYS.items():
                    backend.exec(node, (sys.executable, "-P", "-c", RELAY, *ifaces), 1,
                                 background=True)
            backend.exec("app2", ("python3", "-c", RECEIVER, str(result)), 1, background=True)
            time.sleep(0.5)
            started = (backend.state.processes.items() if kind == "ftss" else
                       ((b["node"], b) for b in backend.state.background))
            pids = {node: rec["pid"] for node, rec in started if node in MEASURED}
            apps = [(backend.namespace(h), "eth0") for h in ("app1", "app2")]
            cpu0 = {n: cpu_seconds([p]) for n, p in pids.items()}
            rx0 = sum(rx_packets(*a) for a in apps)
            res = backend.exec("app1", ("python3", "-c", SENDER.format(mb=mb)), 600)
            deadline = time.monotonic() + 60
            while not result.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu1 = {n: cpu_seconds([p]) for n, p in pids.items()}
            rx1 = sum(rx_packets(*a) for a in apps)
            if res.status != 0 or not result.exists():
                raise SystemExit(f"{kind}: transfer failed: {res.stderr.strip()[-300:]}")
            mbps = float(result.read_text())
        finally:
            backend.down()
    frames = rx1 - rx0
    out = {"MBps": mbps}
    if kind != "switch":
        per = {n: (cpu1[n][0] - cpu0[n][0], cpu1[n][1] - cpu0[n][1]) for n in pids}
        user, system = sum(u for u, _ in per.values()), sum(s for _, s in per.values())
        out |= {"frames": frames, "user_s": user, "sys_s": system,
                "us_per_frame": (user + system) / frames * 1e6 if frames else None}
        if frames:  # where it goes: each process's user and system µs per carried frame
            out |= {f"{n}_{k}_us": v / frames * 1e6 for n, (u, s) in per.items()
                    for k, v in (("user", u), ("sys", s))}
    return out


def measure(kind: str, mb: int, pythonpath: str) -> dict:
    """One worker on the tree ``pythonpath``, run from its root: a revision whose node
    processes put the working directory first on sys.path (``python -m``, before the
    backend's ``-P``) would otherwise import this tree's code and measure it twice."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), WORKER, kind, str(mb)],
                         env=env, capture_output=True, text=True, timeout=900, cwd=pythonpath)
    if res.returncode != 0:
        raise SystemExit(f"{kind} ({pythonpath}): {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbytes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", metavar="REV", help="also measure the FTSS path of REV")
    ap.add_argument("--floor", action="store_true",
                    help="also measure the same chain of logic-free Python relays")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"switch": [], "ftss": [], "base": [], "floor": []}
    with worktree(args.baseline) as tree:
        for _ in range(args.rounds):  # interleaved: drift of the machine hits all alike
            runs["switch"].append(measure("switch", args.mbytes, str(ROOT)))
            runs["ftss"].append(measure("ftss", args.mbytes, str(ROOT)))
            if tree is not None:
                runs["base"].append(measure("ftss", args.mbytes, str(tree)))
            if args.floor:
                runs["floor"].append(measure("floor", args.mbytes, str(ROOT)))
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items() if v}
    summary = {"mbytes": args.mbytes, "rounds": args.rounds, "median": med,
               "ftss_over_switch": med["ftss"]["MBps"] / med["switch"]["MBps"], "runs": runs}
    if "base" in med:
        summary |= {"base_over_switch": med["base"]["MBps"] / med["switch"]["MBps"],
                    "ratio_gain": (med["ftss"]["MBps"] / med["base"]["MBps"])}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"TCP {args.mbytes} MB, median of {args.rounds} interleaved rounds")
    for kind, m in med.items():
        extra = (f", {m['us_per_frame']:.0f} µs CPU per carried frame ({m['frames']:.0f} frames;"
                 f" user {m['user_s']:.2f} s, system {m['sys_s']:.2f} s)"
                 if "us_per_frame" in m else "")
        print(f"  {kind:6s} {m['MBps']:8.2f} MB/s{extra}")
        split = [f"{n} {m[f'{n}_user_us']:.0f}+{m[f'{n}_sys_us']:.0f}"
                 for n in MEASURED if f"{n}_user_us" in m]
        if split:
            print(f"         µs per frame, user+system: {', '.join(split)}")
    print(f"  ftss/switch = {summary['ftss_over_switch']:.4f}")
    if "base" in med:
        print(f"  base/switch = {summary['base_over_switch']:.4f}; "
              f"ftss/base = {summary['ratio_gain']:.2f}×")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == WORKER:
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
