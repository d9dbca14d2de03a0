"""Seed 003's SANIC on real links: two ``port.SanPort`` in two namespaces of a veth pair, the
frames built and read by ftsslab (no RoCE in this kernel), the link clean or impaired by the
lab's shim; tshark reads every frame without a complaint."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from ftsslab.fast.roce import verify_icrc
from ftsslab.lab.scenario import load_scenario_text
from ftsslab.san.memory import PAGE, Vmm
from ftsslab.san.qp import WcStatus, WrOpcode
from ftsslab.san.rkeys import Access
from ftsslab.san.verbs import CQ, SGE, Context, RecvWR, SendWR
from tests import support
from tests.san.test_verbs import BUF, peek, poke

pytestmark = pytest.mark.root

IPS = {"h1": ("10.3.0.1", "02:5a:00:00:00:01"), "h2": ("10.3.0.2", "02:5a:00:00:00:02")}
RW = Access.REMOTE_READ | Access.REMOTE_WRITE
WAIT = 120.0  # generous: a loaded 2-core box, and 10 % loss


def lab_text(impair: str = "") -> str:
    return f"""
name: san-port
seed: 3
nodes: {{h1: {{kind: host}}, h2: {{kind: host}}}}
links:
  - endpoints: [{{node: h1, interface: eth0, mac: "02:00:00:00:00:01"}},
                {{node: h2, interface: eth0, mac: "02:00:00:00:00:02"}}]
    {f"impair: {impair}" if impair else ""}
"""


def node(pages: int = 160) -> Context:
    vmm = Vmm(256)
    vmm.add_segment(1, esid=1)
    vmm.map_range(vmm.process(1), BUF, pages * PAGE)
    return Context(vmm)


class Pair:
    """Two SANICs, h1 -> h2, one RC QP each way connected; B's buffer bound to ``key``."""

    def __init__(self, backend) -> None:
        from ftsslab.san.port import SanPort

        self.a, self.b = node(), node()
        self.ports = {}
        for name, ctx in (("h1", self.a), ("h2", self.b)):
            ip, mac = IPS[name]
            self.ports[name] = SanPort(ctx, "eth0", ip, mac, netns=backend.namespace(name))
        self.pa, self.pb = self.a.pd(1), self.b.pd(1)
        self.cqa, self.cqb = CQ(), CQ()
        self.qa = self.pa.open_qp(self.cqa, max_outstanding=16)
        self.qb = self.pb.open_qp(self.cqb)
        pa, pb = self.ports["h1"], self.ports["h2"]
        pa.resolve(IPS["h2"][0])
        pb.resolve(IPS["h1"][0])
        pa.call(lambda: self.qa.connect(IPS["h2"][0], self.qb.qp_num, 0.0, psn=7,
                                        remote_psn=900, timeout=0.05))
        pb.call(lambda: self.qb.connect(IPS["h1"][0], self.qa.qp_num, 0.0, psn=900,
                                        remote_psn=7, timeout=0.05))
        self.key = pb.call(self.pb.allocate_rkey)
        pb.call(lambda: self.pb.bind_rkey(self.key, BUF, 64 * PAGE, RW))

    def close(self) -> None:
        for p in self.ports.values():
            p.close()


@pytest.fixture
def lab(request):
    from ftsslab.lab.veth.backend import VethBackend

    before = support.lab_resources()
    b = VethBackend(capture=False)
    b.up(load_scenario_text(lab_text(getattr(request, "param", ""))))
    pair = None
    try:
        pair = Pair(b)
        yield b, pair
    finally:
        if pair is not None:
            pair.close()
        b.down()
        assert support.lab_resources() == before


def test_write_read_and_send_across_a_veth_pair_and_tshark_reads_every_frame(lab, tmp_path):
    """Claim 1 on a real link: A writes 256 KiB of its buffer into B's bound buffer (256
    packets at MTU 1024), reads them back into another buffer, SENDs into B's receive; every
    frame on B's interface has a right ICRC, and tshark finds nothing malformed or suspect."""
    from ftsslab.lab.veth.netns import call_in_netns
    from tests.wireshark.oracle import TSHARK, write_pcap

    b, p = lab

    def tap() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        s.bind(("eth0", 0))
        s.setblocking(False)
        return s

    sniff = call_in_netns(b.namespace("h2"), tap)
    try:
        pa, pb = p.ports["h1"], p.ports["h2"]
        data = bytes(range(256)) * 1024
        pa.call(lambda: poke(p.a, 1, BUF, data))
        pb.call(lambda: p.qb.post_recv(RecvWR(1, (SGE(BUF + 100 * PAGE, 100),))))
        pa.call(lambda: p.qa.post_send(SendWR(1, WrOpcode.RDMA_WRITE, (SGE(BUF, len(data)),),
                                              remote_addr=BUF, rkey=p.key), time.monotonic()))
        pa.call(lambda: p.qa.post_send(SendWR(2, WrOpcode.RDMA_READ,
                                              (SGE(BUF + len(data), len(data)),),
                                              remote_addr=BUF, rkey=p.key), time.monotonic()))
        pa.call(lambda: p.qa.post_send(SendWR(3, WrOpcode.SEND, (SGE(BUF + 5, 100),)),
                                       time.monotonic()))
        got = []
        pa.wait(lambda: got.extend(p.cqa.poll(10)) or len(got) == 3, WAIT)
        assert [(w.wr_id, w.status) for w in got] == [(1, WcStatus.SUCCESS),
                                                      (2, WcStatus.SUCCESS),
                                                      (3, WcStatus.SUCCESS)]
        recv = []
        pb.wait(lambda: recv.extend(p.cqb.poll()) or bool(recv), WAIT)
        assert pb.call(lambda: peek(p.b, 1, BUF, len(data))) == data
        assert pa.call(lambda: peek(p.a, 1, BUF + len(data), len(data))) == data
        assert pb.call(lambda: peek(p.b, 1, BUF + 100 * PAGE, 100)) == data[5:105]
        seen = []
        while True:
            try:
                seen.append(sniff.recv(65535))
            except BlockingIOError:
                break
    finally:
        sniff.close()
    roce = [f for f in seen if f[12:14] == b"\x08\x00" and f[23] == 17
            and f[36:38] == (4791).to_bytes(2, "big")]
    assert len(roce) >= 2 * 256 + 3 and all(verify_icrc(f) for f in roce)
    pcap = write_pcap(tmp_path / "san.pcapng", roce)
    bad = subprocess.run([TSHARK, "-r", str(pcap), "-Y",
                          "_ws.malformed || _ws.expert.severity >= warning", "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 0 and bad.stdout.strip() == "", bad.stdout[:500] + bad.stderr[:500]
    names = subprocess.run([TSHARK, "-r", str(pcap), "-T", "fields", "-e", "infiniband.bth.opcode"],
                           capture_output=True, text=True, timeout=300).stdout.split()
    assert len(names) == len(roce)


@pytest.mark.parametrize("lab", ["{loss: 10%, delay: 1ms, reorder: 1%}"], indirect=True)
def test_rc_over_an_impaired_veth_link_delivers_every_operation_once_in_order(lab):
    """Check 17 on veth (a short version of the 10,000): 10 % loss and 1 % reordering (1 ms
    delay) by the lab's shim; 500 SENDs and 500 WRITEs, each exactly once and in order."""
    _, p = lab
    pa, pb = p.ports["h1"], p.ports["h2"]
    n = 500
    for i in range(n):
        pa.call(lambda i=i: poke(p.a, 1, BUF + i * 8, i.to_bytes(8, "big")))
        pb.call(lambda i=i: p.qb.post_recv(RecvWR(i, (SGE(BUF + 32 * PAGE + i * 8, 8),))))
    for i in range(n):
        src = (SGE(BUF + i * 8, 8),)
        pa.call(lambda i=i, src=src: p.qa.post_send(SendWR(2 * i, WrOpcode.SEND, src),
                                                     time.monotonic()))
        pa.call(lambda i=i, src=src: p.qa.post_send(SendWR(
            2 * i + 1, WrOpcode.RDMA_WRITE, src, remote_addr=BUF + i * 8, rkey=p.key),
            time.monotonic()))
    got = []
    pa.wait(lambda: got.extend(p.cqa.poll(4 * n)) or len(got) >= 2 * n, WAIT)
    assert [(w.wr_id, w.status) for w in got] == [(i, WcStatus.SUCCESS) for i in range(2 * n)]
    recv = []
    pb.wait(lambda: recv.extend(p.cqb.poll(4 * n)) or len(recv) >= n, WAIT)
    assert [w.wr_id for w in recv] == list(range(n))
    want = b"".join(i.to_bytes(8, "big") for i in range(n))
    assert pb.call(lambda: peek(p.b, 1, BUF, 8 * n)) == want
    assert pb.call(lambda: peek(p.b, 1, BUF + 32 * PAGE, 8 * n)) == want
    assert p.qa.core.counters["resent"] > 0


def test_a_delay_holds_the_queue_on_the_wall_clock(lab):
    """Check 20 on veth: SEND, Delay(50 ms), SEND -- B's second receive completes at least
    50 ms after the Delay was posted, by the wall clock (CLOCK_MONOTONIC is the host's, shared
    by the namespaces).  The gap between B's two receives is no bound: the first SEND may
    arrive late on a loaded box and shorten it (CI saw 49.97 ms)."""
    _, p = lab
    pa, pb = p.ports["h1"], p.ports["h2"]
    p.qb.recv_cq = stamped = CQ(clock=time.monotonic)
    for i in range(2):
        pb.call(lambda i=i: p.qb.post_recv(RecvWR(i, (SGE(BUF + 100 * PAGE, 8),))))
    posted = {}
    for wr in (SendWR(1, WrOpcode.SEND, (SGE(BUF, 8),)), SendWR(2, WrOpcode.DELAY, delay=0.05),
               SendWR(3, WrOpcode.SEND, (SGE(BUF, 8),))):
        posted[wr.wr_id] = time.monotonic()
        pa.call(lambda wr=wr: p.qa.post_send(wr, time.monotonic()))
    pb.wait(lambda: len(stamped.stamps) == 2, WAIT)
    second, _ = stamped.stamps[1]
    assert second - posted[2] >= 0.05
