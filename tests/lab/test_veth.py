"""The veth backend on real namespaces (root only).

Every lab a test builds is torn down by a fixture finalizer, also when the test
fails, and the finalizer asserts that no ``fl*`` namespace, root link or node
process that appeared during the test is left (other runs' live labs aside).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from ftsslab.lab.backend import BackendError
from ftsslab.lab.model import Endpoint, ForwardingEntry, Link, Node, Scenario
from ftsslab.lab.veth import names, state
from ftsslab.lab.veth.backend import VethBackend
from tests import support

pytestmark = pytest.mark.root

MAC = {"h1": "02:00:00:01:00:00", "h2": "02:00:00:02:00:00", "h3": "02:00:00:03:00:00"}
IP = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}
UNKNOWN_MAC = "02:00:00:00:00:99"


def three_hosts() -> Scenario:
    """h1, h2, h3 on switch s1 (p1..p3). The h3 link lists the switch first, so its
    capture sits on the switch side (the others capture on the host side)."""
    ep = {h: Endpoint(h, "eth0", MAC[h], f"{IP[h]}/24") for h in MAC}
    ports = [Endpoint("s1", f"p{i}", f"02:00:00:0a:0{i}:00") for i in (1, 2, 3)]
    links = (Link(ep["h1"], ports[0]), Link(ep["h2"], ports[1]), Link(ports[2], ep["h3"]))
    nodes = (Node("h1", "host"), Node("h2", "host"), Node("h3", "host"), Node("s1", "switch"))
    return Scenario("veth-test", "<test>", "", nodes, links, (), ())


LINK = {"h1": "h1:eth0 s1:p1", "h2": "h2:eth0 s1:p2", "h3": "s1:p3 h3:eth0"}


@pytest.fixture
def labs(request):
    """Make labs with ``labs(scenario)``; all are removed afterwards and leaks asserted."""
    before = support.lab_resources()
    made: list[VethBackend] = []

    def make(scenario: Scenario | None = None) -> VethBackend:
        b = VethBackend()
        made.append(b)
        b.up(scenario or three_hosts())
        return b

    yield make
    for b in made:
        b.down()
    leaked = support.leaked(before)
    assert not leaked, "leaked:\n" + "\n".join(map(str, leaked))
    for b in made:
        if b.lab_id:
            assert not os.path.exists(names.state_path(b.lab_id))
            assert not os.path.exists(names.lab_dir(b.lab_id))


def udp(dst_mac: str, dport: int, dst_ip: str = "10.0.0.100", src: str = "h1") -> bytes:
    from scapy.layers.inet import IP as IPL
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether
    return bytes(Ether(src=MAC[src], dst=dst_mac) / IPL(src=IP[src], dst=dst_ip)
                 / UDP(sport=40000, dport=dport) / b"ftsslab")


def on(frames, host: str, data: bytes | None = None, **kw):
    out = [f for f in frames if f.link == LINK[host]]
    if data is not None:
        out = [f for f in out if f.data[12:] == data[12:]]
    return [f for f in out if all(getattr(f, k) == v for k, v in kw.items())]


def ping(b: VethBackend, src: str, dst: str, count: int = 1) -> int:
    r = b.exec(src, ("ping", "-c", str(count), "-i", "0.2", "-W", "1", IP[dst]), timeout=10)
    return r.status


def test_learning_ping_through_switch(labs):
    b = labs()
    assert b.namespace("h1") == f"fl{b.lab_id}-h1"
    b.set_step("ping")
    assert ping(b, "h1", "h2", 2) == 0
    time.sleep(0.05)
    fr = b.frames()
    icmp = [f for f in fr if len(f.data) >= 34 and f.data[12:14] == b"\x08\x00"
            and f.data[23] == 1]
    # echo requests and replies crossed h1's and h2's links, never h3's: learnt, not flooded
    assert len(on(icmp, "h1")) == 4 and len(on(icmp, "h2")) == 4 and not on(icmp, "h3")
    # the ARP request was flooded to h3 (captured on the switch side: s1:p3 -> h3:eth0)
    arp = [f for f in fr if f.data[12:14] == b"\x08\x06"]
    assert on(arp, "h3", src="s1:p3", dst="h3:eth0")
    assert all(f.step == "ping" for f in fr)
    assert [f.time for f in fr] == sorted(f.time for f in fr)
    # real checksums: offload is off on every veth end of a host (KindSpec.keeps_offload)
    r = b.exec("h2", ("ethtool", "-k", "eth0"), timeout=10)
    assert "tx-checksumming: off" in r.stdout and "rx-checksumming: off" in r.stdout
    r = b.exec("s1", ("sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"), timeout=10)
    assert r.stdout.strip() == "1"
    r = b.exec("h1", ("sleep", "5"), timeout=0.3)
    assert r.status == 124 and "timed out" in r.stderr
    r = b.exec("h3", ("sh", "-c", "echo $FTSSLAB_LAB $FTSSLAB_NODE $FTSSLAB_LAB_DIR"), 10)
    assert r.stdout.split() == [b.lab_id, "h3", names.lab_dir(b.lab_id)]


def test_table_redirect_rewrites_mac(labs):
    b = labs()
    entry = ForwardingEntry(vip="10.0.0.100", out_port="p2", proto=17, vport=7,
                            dst_mac=MAC["h2"])
    b.table("s1", "add", entry)
    assert b.entries("s1") == [entry]
    b.set_step("redirect")
    hit = udp(UNKNOWN_MAC, 7)
    b.send("h1:eth0", hit)
    b.set_step("miss")
    miss = udp(UNKNOWN_MAC, 8)
    b.send("h1:eth0", miss)
    time.sleep(0.1)
    fr = b.frames()
    # injected at the captured end (h1:eth0): captured exactly once
    assert len(on(fr, "h1", hit, src="h1:eth0", step="redirect")) == 1
    out = on(fr, "h2", hit, src="s1:p2", dst="h2:eth0")
    assert len(out) == 1 and out[0].data[:6] == bytes.fromhex(MAC["h2"].replace(":", ""))
    assert out[0].step == "redirect"
    assert not on(fr, "h3", hit)                       # not flooded
    # a miss goes to the bridge: unknown destination -> flooded unchanged to p2 and p3
    for h in ("h2", "h3"):
        got = on(fr, h, miss)
        assert len(got) == 1 and got[0].data == miss and got[0].step == "miss"
    # out_port may be the in-port
    back = ForwardingEntry(vip="10.0.0.101", out_port="p3", dst_mac=MAC["h3"])
    b.table("s1", "add", back)
    b.send("h3:eth0", udp(UNKNOWN_MAC, 9, "10.0.0.101", src="h3"))
    time.sleep(0.1)
    got = on(b.frames(), "h3", udp(UNKNOWN_MAC, 9, "10.0.0.101", src="h3"))
    # injected at the non-captured end: once in (h3 -> s1:p3), once back out (s1:p3 -> h3)
    assert [(f.src, f.data[:6].hex()) for f in got] == [
        ("h3:eth0", UNKNOWN_MAC.replace(":", "")), ("s1:p3", MAC["h3"].replace(":", ""))]
    b.table("s1", "remove", entry)
    assert b.entries("s1") == [back]
    with pytest.raises(BackendError, match="no such entry"):
        b.table("s1", "remove", entry)
    with pytest.raises(BackendError, match="no port"):
        b.table("s1", "add", ForwardingEntry(vip="10.0.0.1", out_port="p9"))
    kinds = [e.kind for e in b.events()]
    assert kinds == ["table-add", "table-add", "table-remove"]
    assert all(0 <= e.time <= b.now() for e in b.events())


def test_link_down_stops_traffic(labs):
    b = labs()
    assert ping(b, "h1", "h2") == 0
    b.set_link("s1:p2 h2:eth0", False)        # either order of the brief form
    b.set_step("down")
    assert ping(b, "h1", "h2") != 0
    b.send("h2:eth0", udp(MAC["h1"], 7, src="h2"))     # a down link carries nothing
    time.sleep(0.05)
    assert not [f for f in b.frames() if f.link == LINK["h2"] and f.step == "down"]
    b.set_link(LINK["h2"], True)
    b.set_step("up-again")
    assert ping(b, "h1", "h2") == 0
    assert [e.kind for e in b.events()] == ["link-down", "link-up"]


def test_switchd_kill_restart_keeps_table(labs):
    b = labs()
    entry = ForwardingEntry(vip="10.0.0.100", out_port="p2", client_ip="10.0.0.1", proto=17,
                            client_port=40000, vport=7, dst_mac=MAC["h2"])
    b.table("s1", "add", entry)
    pid = b.switchd_pid("s1")
    b.process("s1", "kill")
    assert b.switchd_pid("s1") is None
    assert b.entries("s1") == [entry]              # read from the kernel meanwhile
    with pytest.raises(BackendError, match="not running"):
        b.table("s1", "add", entry)
    b.set_step("killed")
    b.send("h1:eth0", udp(UNKNOWN_MAC, 7))         # the data plane is in the kernel
    time.sleep(0.05)
    assert len(on(b.frames(), "h2", udp(UNKNOWN_MAC, 7), step="killed")) == 1
    b.process("s1", "restart")
    assert b.switchd_pid("s1") not in (None, pid)
    assert b.entries("s1") == [entry]
    b.table("s1", "remove", entry)
    assert b.entries("s1") == []
    assert [e.kind for e in b.events()] == ["table-add", "kill", "restart", "table-remove"]
    with open(names.switchd_log(b.lab_id, "s1")) as f:
        log = f.read()
    assert '"op": "rebuild"' in log and '"op": "remove"' in log
    with pytest.raises(BackendError, match="no process"):
        b.process("h1", "kill")


def test_two_labs_do_not_collide(labs):
    b1, b2 = labs(), labs()
    assert b1.lab_id != b2.lab_id
    assert ping(b1, "h1", "h2") == 0 and ping(b2, "h1", "h3") == 0
    b1.table("s1", "add", ForwardingEntry(vip="10.0.0.100", out_port="p3"))
    assert b2.entries("s1") == []
    a = VethBackend.attach(b2.lab_id)          # another CLI invocation would do this
    assert a.exec("h2", ("ip", "-br", "addr", "show", "eth0"), 10).stdout.count("10.0.0.2/24")
    assert a.entries("s1") == []


def test_up_failure_leaves_nothing(labs):
    sc = three_hosts()
    bad = Endpoint("h9", "eth0", "02:00:00:09:00:00", "10.0.0.9/99")
    sc = Scenario(sc.name, sc.path, "", sc.nodes + (Node("h9", "host"),),
                  sc.links + (Link(bad, Endpoint("s1", "p9", "02:00:00:0a:09:00")),), (), ())
    with pytest.raises(BackendError, match="lab up failed"):
        labs(sc)
    with pytest.raises(BackendError, match="not supported"):
        labs(Scenario("x", "", "", (Node("f1", "no-such-kind"),), (), (), ()))


LEAKER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from ftsslab.lab.veth.backend import VethBackend
    sys.path.insert(0, {here!r})
    from test_veth import three_hosts
    b = VethBackend(capture=False)
    b.up(three_hosts())
    print(b.lab_id, flush=True)
    os._exit(0)          # dies without down(): the lab leaks
""")


def test_clean_removes_only_dead_labs(labs):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    cp = subprocess.run([sys.executable, "-c", LEAKER.format(root=root, here=here)],
                        capture_output=True, text=True, timeout=30)
    leaked = cp.stdout.strip()
    assert names.LAB_ID_RE.match(leaked), cp.stderr
    bystander = "ftsslab-test-keep"          # not ours by name: clean() must not touch it
    subprocess.run(["ip", "netns", "add", bystander], check=True)
    try:
        live = labs()
        assert any(n.startswith(f"fl{leaked}-") for n in names.list_netns())
        dead = {st.lab_id for st in state.list_labs() if not st.alive()} - {leaked}
        removed = state.clean()
        assert f"netns fl{leaked}-s1" in removed and any("process" in r for r in removed)
        assert not any(n.startswith(f"fl{leaked}-") for n in names.list_netns())
        assert not any(live.lab_id in r for r in removed)
        # nothing else, but what was dead already (another test run may leave such labs)
        assert all(leaked in r or r.startswith("process") or any(d in r for d in dead)
                   for r in removed)
        assert bystander in names.list_netns()
        assert ping(live, "h1", "h2") == 0
        assert not any(leaked in r or live.lab_id in r for r in state.clean())
    finally:
        subprocess.run(["ip", "netns", "del", bystander], check=False)


@pytest.mark.parametrize("where", ["ip_batches", "_wait_processes"])
def test_interrupted_up_leaves_nothing(labs, monkeypatch, where):
    from ftsslab.lab.veth import backend as vb

    def boom(*_a, **_k):
        raise KeyboardInterrupt
    target = vb.VethBackend if where.startswith("_") else vb
    monkeypatch.setattr(target, where, boom)
    with pytest.raises(KeyboardInterrupt):
        labs()


OWNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {here!r})
    from ftsslab.lab.veth.backend import VethBackend
    from test_veth import three_hosts
    b = VethBackend(capture=False)
    b.up(three_hosts())
    if {detach!r}:
        b.detach()
    print(b.lab_id, flush=True)
    if not {detach!r}:
        time.sleep(60)
""")


def _owner(detach: bool) -> tuple[subprocess.Popen, str]:
    here = os.path.dirname(os.path.abspath(__file__))
    code = OWNER.format(root=os.path.dirname(os.path.dirname(here)), here=here, detach=detach)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip()


def test_sigterm_to_owner_tears_down(labs):
    p, lab_id = _owner(detach=False)
    try:
        assert any(n.startswith(f"fl{lab_id}-") for n in names.list_netns())
        p.terminate()
        assert p.wait(timeout=20) == 143
        assert not any(n.startswith(f"fl{lab_id}-") for n in names.list_netns())
        assert not os.path.exists(names.state_path(lab_id))
    finally:
        p.kill()
        p.wait()


def test_detached_lab_survives_and_attaches(labs):
    p, lab_id = _owner(detach=True)
    p.wait(timeout=20)
    try:
        st = state.load(lab_id)
        assert st is not None and st.detached and st.status == "up"
        assert state.clean() == []                    # detached: not a leak
        a = VethBackend.attach(lab_id)
        assert ping(a, "h1", "h3") == 0
        a.table("s1", "add", ForwardingEntry(vip="10.0.0.100", out_port="p1"))
        assert len(VethBackend.attach(lab_id).entries("s1")) == 1
        a.down()
        assert not any(n.startswith(f"fl{lab_id}-") for n in names.list_netns())
    finally:
        state.remove_lab(lab_id, state.load(lab_id))
