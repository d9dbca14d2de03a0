"""End-to-end TCP throughput between two servers through the FTSS, against a plain switch.

    python bench/ftss_tcp.py [--mbytes N] [--json]      (root: real namespaces)

Both runs use the same unmodified programs (Python sockets on app1 and app2, real kernel
TCP). Through the FTSS every frame is committed to the mirrored store (fsync, group commit)
before it is acknowledged and delivered; the baseline is a learning switch on veth,
measured in the same run. The ratio is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario_text
from ftsslab.lab.veth.backend import VethBackend

RECEIVER = ("import socket\\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\\n"
            "s.bind(('10.0.0.2', 5001)); s.listen(1); c,_=s.accept()\\n"
            "while c.recv(65536): pass\\n"
            "c.close()\\n")
SENDER = ("import socket,time\\n"
          "data=b'x'*({mb}*1000000); s=socket.create_connection(('10.0.0.2', 5001))\\n"
          "t=time.perf_counter(); s.sendall(data); s.shutdown(socket.SHUT_WR)\\n"
          "while s.recv(65536): pass\\n"
          "print('MBps', {mb}/(time.perf_counter()-t))\\n")

ROOT = Path(__file__).resolve().parents[1]
# the two-server topology of the http-kill scenario; the baseline puts a switch in its place
FTSS = (ROOT / "scenarios" / "ftss-http-kill.yaml").read_text().split("\nsteps:")[0] + "\n"
SWITCH = """name: bench-switch
nodes:
  s1: {kind: switch}
  app1: {kind: host}
  app2: {kind: host}
links:
  - endpoints:
      - {node: app1, interface: eth0, mac: "02:00:00:00:00:01", ipv4: 10.0.0.1/24}
      - {node: s1, interface: p1}
  - endpoints:
      - {node: app2, interface: eth0, mac: "02:00:00:00:00:02", ipv4: 10.0.0.2/24}
      - {node: s1, interface: p2}
"""


def steps(mb: int) -> str:
    return f"""steps:
  - exec: {{node: app2, background: true, cmd: [python3, -c, "{RECEIVER}"]}}
  - wait: 0.5
  - name: send
    exec: {{node: app1, timeout: 300, cmd: [python3, -c, "{SENDER.format(mb=mb)}"]}}
expect:
  - command: {{step: send, status: 0, contains: MBps}}
"""


def measure(text: str, mb: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(text + steps(mb))
        runner = Runner(load_scenario_text(path.read_text(), str(path)), VethBackend(capture=False))
        result = runner.run()
        if not result.passed:
            sys.exit(f"{text.split()[1]}: {[o.detail for o in result.outcomes]}")
        return float(runner.execs["send"].stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbytes", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    switch = measure(SWITCH, args.mbytes)
    ftss = measure(FTSS, args.mbytes)
    row = {"mbytes": args.mbytes, "switch_MBps": round(switch, 1), "ftss_MBps": round(ftss, 2),
           "ftss_over_switch": round(ftss / switch, 4)}
    print(json.dumps(row, indent=2) if args.json else
          f"TCP {args.mbytes} MB: switch {switch:.1f} MB/s, through the FTSS {ftss:.2f} MB/s "
          f"({ftss / switch:.3f}×)")


if __name__ == "__main__":
    main()
