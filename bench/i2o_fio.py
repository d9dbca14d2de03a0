"""fio through the whole seed-001 path -- NBD -> nbdkit -> the client library -> I2O BSA on the
SAN (RoCEv2 RC, user space) -> the host's direct call -> the IOP -> its device file -- against
fio on that same device file directly, in one run: IOPS, MB/s, completion latency, ratios.

    python bench/i2o_fio.py [--rounds 3] [--size 8M] [--runtime 5] [--iodepth 4]
                            [--rw randrw] [--bs 4k] [--quick] [--json]   (root: a veth lab)

One lab (a host with one 64 MiB disk, a remote exporting it to NBD: the ``nbd`` option) is up
for the whole run and always taken down. Each round runs the same fio job twice, in turns:
``--ioengine=nbd`` on the remote's export, then ``--ioengine=psync`` on the host's sparse
device file in the lab's directory (direct=0: the page cache, as the IOP's own writes use
it). Both jobs verify what they wrote (crc32c), so a path that returns wrong bytes fails
the run. Figures are the medians of the rounds; the ratio is NBD over the file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIO = """\
name: i2o-fio-bench
nodes:
  h: {kind: i2o-host, iops: {p0: {devices: [64MiB]}}}
  r1: {kind: i2o-remote, host: h, nbd: {iop: p0}}
  sw: {kind: switch}
links:
  - endpoints:
      - {node: h, interface: eth0, mac: "02:00:00:00:0b:01", ipv4: 10.0.11.1/24}
      - {node: sw, interface: p1}
  - endpoints:
      - {node: r1, interface: eth0, mac: "02:00:00:00:0b:02", ipv4: 10.0.11.11/24}
      - {node: sw, interface: p2}
steps: []
"""


def fio(target: list[str], a: argparse.Namespace) -> dict:
    """One fio job on ``target`` (its engine and file/URI options): its figures."""
    argv = ["fio", "--name=bench", *target, f"--rw={a.rw}", f"--bs={a.bs}",
            f"--size={a.size}", f"--iodepth={a.iodepth}", f"--runtime={a.runtime}",
            "--time_based=0", "--verify=crc32c", "--verify_state_save=0",
            "--output-format=json"]
    got = subprocess.run(argv, capture_output=True, text=True, timeout=a.runtime * 20 + 120)
    if got.returncode != 0:
        raise SystemExit(f"fio failed ({got.returncode}): {got.stderr[-400:]}")
    job = json.loads(got.stdout[got.stdout.index("{"):])["jobs"][0]
    if job.get("error"):
        raise SystemExit(f"fio: error {job['error']} (a verify failed?)")
    out = {}
    for d in ("read", "write"):
        r = job[d]
        if r["io_bytes"]:
            pct = r["clat_ns"].get("percentile", {})
            out[d] = {"iops": r["iops"], "mb_s": r["bw_bytes"] / 1e6,
                      "p50_us": pct.get("50.000000", 0) / 1e3,
                      "p99_us": pct.get("99.000000", 0) / 1e3}
    return out


def run(a: argparse.Namespace) -> dict:
    from ftsslab.lab.scenario import load_scenario
    from ftsslab.lab.veth.backend import VethBackend
    from ftsslab.lab.veth.names import lab_dir

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "i2o-fio-bench.yaml"
        path.write_text(SCENARIO)
        backend = VethBackend()
        backend.up(load_scenario(path))
        try:
            d = Path(lab_dir(backend.lab_id))
            nbd = ["--ioengine=nbd", f"--uri=nbd+unix:///?socket={d}/r1.nbd"]
            direct = ["--ioengine=psync", f"--filename={d}/h-p0-d0.img"]
            rounds = [{"nbd": fio(nbd, a), "file": fio(direct, a)} for _ in range(a.rounds)]
        finally:
            backend.down()
    result: dict = {"job": {k: getattr(a, k) for k in ("rw", "bs", "size", "iodepth",
                                                       "runtime", "rounds")}}
    for path_name in ("nbd", "file"):
        result[path_name] = {d: {k: statistics.median(r[path_name][d][k] for r in rounds)
                                 for k in rounds[0][path_name][d]}
                             for d in rounds[0][path_name]}
    result["ratio"] = {d: {k: result["nbd"][d][k] / result["file"][d][k]
                           if result["file"][d][k] else 0.0 for k in result["nbd"][d]}
                       for d in result["nbd"]}
    return result


def show(result: dict) -> None:
    t = Table("path", "dir", "IOPS", "MB/s", "clat p50 µs", "clat p99 µs",
              title=f"fio {result['job']['rw']} {result['job']['bs']}, iodepth "
                    f"{result['job']['iodepth']} (median of {result['job']['rounds']})")
    for name, label in (("nbd", "NBD -> I2O on the SAN"), ("file", "the device file"),
                        ("ratio", "ratio NBD / file")):
        for d, r in result[name].items():
            fmt = "{:.3f}x" if name == "ratio" else "{:.1f}"
            t.add_row(label, d, *(fmt.format(r[k]) for k in ("iops", "mb_s", "p50_us",
                                                              "p99_us")))
    Console().print(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="8M", help="bytes of the disk the job covers")
    ap.add_argument("--runtime", type=int, default=5, help="seconds at most per job")
    ap.add_argument("--iodepth", type=int, default=4)
    ap.add_argument("--rw", default="randrw")
    ap.add_argument("--bs", default="4k")
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.size, a.runtime = 1, "1M", 2
    result = run(a)
    if a.json:
        print(json.dumps(result))
    else:
        show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
