"""Frames per second of seed 003's sans-IO RC core alone, on one CPU (no IO).

    python bench/san_core.py [--ops 20000] [--size 1024] [--json]

Two ``qp.RcQp`` back to back in memory, the responder writing through its remote keys into a
node's memory (``rkeys.Reach``): RDMA WRITEs of ``--size`` bytes (one packet each at MTU 1024)
and their ACKs, counted as frames through ``receive``; then the same through ``san.fabric``,
where every packet is also built into its RoCEv2 frame and read back with the ICRC verified.
The baseline measured in the same run is a Python loop that does the least a core must per
frame -- one ``struct`` pack and one unpack of a BTH -- so the ratio says how far the core is
from the floor of any Python frame handler on this machine. The issue's aim: >= 100k frames/s
for the core alone; on the shared 2-core box it does 55-60k, and through the fabric 14.9k
(12.6k before the struct codec of ``packets``: the fabric's loop and the verbs dominate there).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftsslab.san.fabric import Fabric  # noqa: E402
from ftsslab.san.memory import PAGE, SEGMENT_SHIFT, Vmm  # noqa: E402
from ftsslab.san.qp import QpState, RcQp, SendWr, Transmit, WrOpcode  # noqa: E402
from ftsslab.san.rkeys import Access, Consumer, Reach, RKeys  # noqa: E402
from ftsslab.san.verbs import CQ, SGE, Context, SendWR  # noqa: E402

BASE = 1 << SEGMENT_SHIFT
RW = Access.REMOTE_WRITE | Access.REMOTE_READ


def core_alone(ops: int, size: int) -> float:
    """Frames/s through two RcQps in memory (requests and ACKs)."""
    vmm = Vmm(64)
    keys = RKeys(vmm)
    keys.open_process(1)
    vmm.add_segment(1, esid=1)
    vmm.map_range(keys.tables[1], BASE, 16 * PAGE)
    key = keys.allocate(Consumer(1))
    keys.bind(Consumer(1), key, BASE, 16 * PAGE, RW)
    a, b = RcQp(1, max_outstanding=64), RcQp(2, memory=Reach(keys, 1))
    for qp, peer in ((a, b), (b, a)):
        qp.modify(QpState.INIT, 0.0)
        qp.modify(QpState.RTR, 0.0, dest_qp=peer.qp_num, rq_psn=0)
        qp.modify(QpState.RTS, 0.0, sq_psn=0)
    data = b"x" * size
    frames, now = 0, 0.0
    start = time.perf_counter()
    pending = []
    for i in range(ops):
        pending += a.post_send(SendWr(i, WrOpcode.RDMA_WRITE, data,
                                      remote_addr=BASE + (i % 32) * size, rkey=key), now)
        while pending:
            act = pending.pop()
            if isinstance(act, Transmit):
                frames += 1
                to = b if act.packet.dqpn == 2 else a
                pending += to.receive(act.packet, now)
    return frames / (time.perf_counter() - start)


def with_frames(ops: int, size: int) -> float:
    """Frames/s through ``san.fabric`` (built, verified, parsed) and the verbs."""
    f = Fabric()
    ctxs = {}
    for name in ("A", "B"):
        vmm = Vmm(64)
        vmm.add_segment(1, esid=1)
        vmm.map_range(vmm.process(1), BASE, 16 * PAGE)
        ctxs[name] = Context(vmm)
        f.add(name, ctxs[name])
    pa, pb = ctxs["A"].pd(1), ctxs["B"].pd(1)
    qa, qb = pa.open_qp(CQ(), max_outstanding=64), pb.open_qp(CQ())
    qa.connect("B", qb.qp_num, 0.0)
    qb.connect("A", qa.qp_num, 0.0)
    key = pb.allocate_rkey()
    pb.bind_rkey(key, BASE, 16 * PAGE, RW)
    start = time.perf_counter()
    for i in range(ops):
        f.send("A", qa.post_send(SendWR(i, WrOpcode.RDMA_WRITE, (SGE(BASE, size),),
                                        remote_addr=BASE + (i % 32) * size, rkey=key), f.now))
        if i % 64 == 63:
            f.run()
    f.run()
    return len(f.frames) / (time.perf_counter() - start)


def floor(ops: int) -> float:
    """The least per frame: pack and unpack one BTH."""
    bth = struct.Struct("!BBHII")
    start = time.perf_counter()
    for i in range(2 * ops):
        bth.unpack(bth.pack(0x0A, 0, 0xFFFF, 2, i & 0xFFFFFF))
    return 2 * ops / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = {"floor frames/s": floor(a.ops), "core frames/s": core_alone(a.ops, a.size),
           "fabric frames/s": with_frames(a.ops // 4, a.size)}
    res["core / floor"] = res["core frames/s"] / res["floor frames/s"]
    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    for k, v in res.items():
        print(f"  {k:<18}{v:>12,.2f}" if "/" in k and "s" not in k.split("/")[1]
              else f"  {k:<18}{v:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
