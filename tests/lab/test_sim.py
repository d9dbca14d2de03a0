"""SimBackend: deterministic, in-process, virtual time."""

from __future__ import annotations

import math
import struct

import pytest

from ftsslab.expr import parse_packet, parse_pattern
from ftsslab.lab.backend import BackendError
from ftsslab.lab.kinds import KindSpec
from ftsslab.lab.model import Endpoint, ForwardingEntry, Link, Node, Scenario
from ftsslab.lab.scenario import MAX_COUNT
from ftsslab.lab.sim import MAX_FRAMES, MAX_SPINS, SimBackend
from ftsslab.lab.switch import Transmit

MAC = {"h1": "02:00:00:01:00:00", "h2": "02:00:00:02:00:00", "h3": "02:00:00:03:00:00"}


def ep(node, iface, mac=None, ipv4=None):
    return Endpoint(node, iface, mac or f"02:00:00:{abs(hash((node, iface))) % 200:02x}:01:00",
                    ipv4)


def scenario(extra_nodes=(), extra_links=(), mtu=1500):
    nodes = (Node("h1", "host"), Node("h2", "host"), Node("h3", "host"), Node("s1", "switch"),
             *extra_nodes)
    links = tuple(
        Link(ep(h, "eth0", MAC[h], f"10.0.0.{i}/24"), ep("s1", f"p{i}", f"02:00:00:09:0{i}:00"),
             mtu=mtu)
        for i, h in enumerate(("h1", "h2", "h3"), start=1)) + tuple(extra_links)
    return Scenario("t", "<test>", "", nodes, links, (), ())


def frame(text):
    return bytes(parse_packet(text))


BCAST_UDP = ('Ether(src="02:00:00:01:00:00", dst="ff:ff:ff:ff:ff:ff")'
             '/IP(src="10.0.0.1", dst="10.0.0.255")/UDP(sport=5, dport=7)/b"hi"')
TO_VIP = ('Ether(src="02:00:00:01:00:00", dst="02:00:00:09:01:00")'
          '/IP(src="10.0.0.1", dst="10.0.0.100")/TCP(sport=40000, dport=80)')
TO_H2 = ('Ether(src="02:00:00:01:00:00", dst="02:00:00:02:00:00")'
         '/IP(src="10.0.0.1", dst="10.0.0.2")/UDP(sport=5, dport=7)')
ENTRY = ForwardingEntry(vip="10.0.0.100", out_port="p3", client_ip="10.0.0.1", proto=6,
                        client_port=40000, vport=80, dst_mac="02:00:00:03:00:00")


@pytest.fixture
def lab():
    b = SimBackend()
    b.up(scenario())
    yield b
    b.down()


def flows(b):
    return [(round(f.time * 1e6), f.src, f.dst, f.step) for f in b.frames()]


def test_flood_learn_unicast_with_latency_and_steps(lab):
    assert lab.name == "sim" and lab.now() == 0
    lab.set_step("burst")
    lab.send("h1:eth0", frame(BCAST_UDP))
    assert flows(lab) == [(0, "h1:eth0", "s1:p1", "burst")]   # captured when it leaves
    lab.advance(0.001)
    assert lab.now() == pytest.approx(0.001)
    assert flows(lab) == [(0, "h1:eth0", "s1:p1", "burst"),
                          (10, "s1:p2", "h2:eth0", "burst"),
                          (10, "s1:p3", "h3:eth0", "burst")]
    assert all(f.data == frame(BCAST_UDP) for f in lab.frames())
    assert lab.frames()[1].link == "h2:eth0 s1:p2"
    lab.set_step("reply")
    reply = ('Ether(src="02:00:00:02:00:00", dst="02:00:00:01:00:00")'
             '/IP(src="10.0.0.2", dst="10.0.0.1")/UDP(sport=7, dport=5)')
    lab.send("h2:eth0", frame(reply))
    lab.advance(0.001)
    assert flows(lab)[3:] == [(1000, "h2:eth0", "s1:p2", "reply"),
                              (1010, "s1:p1", "h1:eth0", "reply")]    # learned: unicast
    core = lab._nodes["h1"].core
    assert core.received[-1][1] == "eth0"
    pat = parse_pattern("UDP(dport=5)")
    from scapy.layers.l2 import Ether
    got = [f for f in lab.frames() if f.dst.startswith("h1:") and pat.matches(Ether(f.data))]
    assert len(got) == 1


def test_in_flight_frames_wait_for_advance(lab):
    lab.send("h1:eth0", frame(BCAST_UDP))
    lab.advance(5e-6)
    assert len(lab.frames()) == 1
    lab.advance(5e-6)
    assert len(lab.frames()) == 3


def test_table_redirect_rewrite_and_events(lab):
    lab.advance(0.5)
    lab.table("s1", "add", ENTRY)
    assert lab.entries("s1") == [ENTRY]
    lab.send("h1:eth0", frame(TO_VIP))
    lab.advance(0.01)
    out = lab.frames()[-1]
    assert (out.src, out.dst) == ("s1:p3", "h3:eth0")
    assert out.data[:6] == bytes.fromhex("020000030000")
    assert out.data[6:] == frame(TO_VIP)[6:]
    lab.table("s1", "remove", ENTRY)
    assert lab.entries("s1") == []
    ev = lab.events()
    assert [(e.time, e.node, e.kind) for e in ev] == [(0.5, "s1", "table-add"),
                                                       (0.51, "s1", "table-remove")]
    assert "vip=10.0.0.100" in ev[0].detail and "-> p3" in ev[0].detail
    with pytest.raises(BackendError, match="not in the table"):
        lab.table("s1", "remove", ENTRY)
    with pytest.raises(BackendError, match="no port"):
        lab.table("s1", "add", ForwardingEntry(vip="10.0.0.1", out_port="p7"))
    with pytest.raises(BackendError, match="no forwarding table"):
        lab.table("h1", "add", ENTRY)
    # the switch's own port MAC is consumed once the entry is gone (not forwarded)
    n = len(lab.frames())
    lab.send("h1:eth0", frame(TO_VIP))
    lab.advance(0.01)
    assert len(lab.frames()) == n + 1


def test_link_down_carries_nothing(lab):
    lab.set_link("s1:p2 h2:eth0", False)           # either order of the brief form
    lab.send("h2:eth0", frame(TO_H2))               # dropped, no error
    lab.send("h1:eth0", frame(BCAST_UDP))
    lab.advance(0.01)
    assert [(f.src, f.dst) for f in lab.frames()] == [("h1:eth0", "s1:p1"),
                                                      ("s1:p3", "h3:eth0")]
    lab.set_link("h2:eth0 s1:p2", True)
    lab.send("h1:eth0", frame(TO_H2))
    lab.advance(0.01)
    assert ("s1:p2", "h2:eth0") in [(f.src, f.dst) for f in lab.frames()]
    assert [(e.node, e.kind) for e in lab.events()] == [("h2:eth0 s1:p2", "link-down"),
                                                        ("h2:eth0 s1:p2", "link-up")]
    with pytest.raises(BackendError, match="no link"):
        lab.set_link("h1:eth0 h2:eth0", False)


def test_kill_keeps_kernel_dataplane_and_table(lab):
    lab.table("s1", "add", ENTRY)
    lab.process("s1", "kill")
    with pytest.raises(BackendError, match="not running"):
        lab.table("s1", "add", ForwardingEntry(vip="10.0.0.5", out_port="p2"))
    assert lab.entries("s1") == [ENTRY]
    lab.send("h1:eth0", frame(TO_VIP))
    lab.advance(0.01)
    assert lab.frames()[-1].dst == "h3:eth0"        # the table still forwards
    lab.process("s1", "restart")
    lab.table("s1", "remove", ENTRY)
    assert [e.kind for e in lab.events()] == ["table-add", "kill", "restart", "table-remove"]
    with pytest.raises(BackendError, match="no process"):
        lab.process("h1", "kill")
    with pytest.raises(BackendError, match="no node"):
        lab.process("zz", "kill")


def test_exec_and_send_errors(lab):
    with pytest.raises(BackendError, match="needs the veth backend"):
        lab.exec("h1", ("ping", "-c", "1", "10.0.0.2"), 5)
    with pytest.raises(BackendError, match="no endpoint"):
        lab.send("h9:eth0", frame(TO_H2))
    with pytest.raises(BackendError, match="shorter"):
        lab.send("h1:eth0", b"\x00" * 10)
    with pytest.raises(BackendError, match="MTU"):
        lab.send("h1:eth0", b"\x02" * 1515)
    lab.send("h1:eth0", b"\x02" * 1514)
    with pytest.raises(BackendError, match="negative"):
        lab.advance(-1)


def run_script(b):
    b.up(scenario())
    for i in range(3):
        b.set_step(f"s{i}")
        b.send("h1:eth0", frame(BCAST_UDP))
        b.send("h2:eth0", frame(TO_H2))
        b.advance(0.002)
        b.table("s1", "add" if i % 2 == 0 else "remove", ENTRY)
        b.send("h1:eth0", frame(TO_VIP))
        b.advance(0.001)
    b.set_link("h3:eth0 s1:p3", False)
    b.send("h1:eth0", frame(BCAST_UDP))
    b.advance(0.1)
    b.down()
    return b.frames(), b.events()


def test_deterministic():
    a, b = run_script(SimBackend()), run_script(SimBackend())
    assert a == b
    assert len(a[0]) > 10


def test_lifecycle():
    b = SimBackend()
    b.down()                                          # idempotent, before up
    with pytest.raises(BackendError, match="not up"):
        b.send("h1:eth0", b"\x00" * 60)
    b.up(scenario())
    with pytest.raises(BackendError, match="already up"):
        b.up(scenario())
    b.send("h1:eth0", frame(BCAST_UDP))
    b.advance(1)
    b.down()
    b.down()
    assert len(b.frames()) == 3                       # results stay readable after down
    b.up(scenario())
    assert b.frames() == [] and b.now() == 0
    b.down()
    bad = scenario(extra_nodes=(Node("x1", "mystery"),))
    with pytest.raises(BackendError, match="no sim model"):
        b.up(bad)
    with pytest.raises(BackendError, match="not up"):
        b.advance(1)


def test_forwarding_loop_is_stopped():
    loop = (Link(ep("s1", "p4"), ep("s2", "p1")), Link(ep("s1", "p5"), ep("s2", "p2")))
    b = SimBackend(max_frames=2000)
    b.up(scenario(extra_nodes=(Node("s2", "switch"),), extra_links=loop))
    b.send("h1:eth0", frame(BCAST_UDP))
    with pytest.raises(BackendError, match="forwarding loop"):
        b.advance(1)
    b.down()


def test_smaller_mtu_link_drops_forwarded_jumbo():
    b = SimBackend()
    sc = scenario()
    links = (Link(sc.links[0].a, sc.links[0].b, mtu=9000), *sc.links[1:])
    b.up(Scenario("t", "<test>", "", sc.nodes, links, (), ()))
    b.send("h1:eth0", bytes.fromhex("ffffffffffff020000010000") + b"\x88\xb5" + b"\0" * 3000)
    b.advance(0.01)
    assert len(b.frames()) == 1 and b.stats["dropped_mtu"] == 2
    b.down()


def sim_kind(monkeypatch, name, factory, *, has_process=False):
    """A kind of the test's own, registered for the test only, with ``factory`` as its
    sim model."""
    from ftsslab.lab import kinds

    kinds.kind_names()  # the systems first: the test's kind must not hide a real one
    monkeypatch.setitem(kinds._KINDS, name, KindSpec(
        name=name, has_process=has_process, needs_kernel=False,
        validate_options=kinds.NO_OPTIONS, summary="a test kind", sim=factory))


class EchoCore:
    """A later kind: echoes every frame back after 1 ms (a timer), has a process."""

    def __init__(self, name):
        self.pending: list[tuple[float, str, bytes]] = []
        self.now = 0.0

    def on_frame(self, iface, frame, now):
        self.pending.append((now + 0.001, iface, frame))
        return []

    def next_deadline(self):
        return min((t for t, _, _ in self.pending), default=None)

    def on_timer(self, now):
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        return [Transmit(i, f[6:12] + f[0:6] + f[12:]) for _, i, f in due]


def test_registry_hook_timers_and_kill_drops_everything(monkeypatch):
    sim_kind(monkeypatch, "echo", lambda node, sc: EchoCore(node.name), has_process=True)
    sc = Scenario("t", "<t>", "", (Node("h1", "host"), Node("e1", "echo")),
                  (Link(ep("h1", "eth0", MAC["h1"]), ep("e1", "eth0", "02:00:00:0e:00:00")),),
                  (), ())
    b = SimBackend()
    b.up(sc)
    b.send("h1:eth0", frame(TO_H2))
    b.advance(0.01)
    assert flows(b) == [(0, "h1:eth0", "e1:eth0", ""), (1010, "e1:eth0", "h1:eth0", "")]
    b.process("e1", "kill")
    b.send("h1:eth0", frame(TO_H2))
    b.advance(0.01)
    assert len(b.frames()) == 3 and b.stats["dropped_killed"] == 1
    b.process("e1", "restart")
    b.send("h1:eth0", frame(TO_H2))
    b.advance(0.01)
    assert len(b.frames()) == 5
    b.down()


def test_link_local_groups_like_the_veth_bridge(lab):
    src = bytes.fromhex("020000010000")
    for dst, reached in (("0180c2000003", 2), ("0180c2000000", 2), ("0180c2000001", 0),
                         ("0180c2000002", 0), ("0180c200000e", 2)):
        n = len(lab.frames())
        lab.send("h1:eth0", bytes.fromhex(dst) + src + b"\x88\x8e" + b"\0" * 46)
        lab.advance(0.001)
        assert len(lab.frames()) - n - 1 == reached, dst


def test_received_with_only_max_allows_none():
    from ftsslab.lab.runner import Runner
    from ftsslab.lab.scenario import load_scenario_text

    text = """
name: at-most
nodes: {h1: {kind: host}, h2: {kind: host}, s1: {kind: switch}}
links: ["h1:eth0 s1:p1", "h2:eth0 s1:p2"]
expect:
  - received: {node: h2, match: 'UDP()', max: 0}
"""
    result = Runner(load_scenario_text(text, "m.yaml"), SimBackend()).run()
    assert result.passed, [o.detail for o in result.outcomes]


def test_a_wait_until_ends_when_it_holds_or_fails_at_its_bound():
    """``wait: {until, timeout}``: the frame sent 2 s later ends the first wait at once after
    it (not at its 30 s bound); the second waits for a frame that never comes and fails its
    step after 1 s, while the run goes on to its own expectations."""
    from ftsslab.lab.runner import Runner
    from ftsslab.lab.scenario import load_scenario_text

    text = """
name: until
nodes: {h1: {kind: host}, h2: {kind: host}, s1: {kind: switch}}
links: ["h1:eth0 s1:p1", "h2:eth0 s1:p2"]
steps:
  - wait: 2
  - send:
      from: h1:eth0
      packet: 'Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")/IP(src="10.0.0.1",
        dst="10.0.0.2")/UDP(dport=7)'
  - name: heard
    wait: {until: [{received: {node: h2, match: 'UDP(dport=7)', count: 1}}], timeout: 30}
  - name: never
    wait: {until: [{received: {node: h2, match: 'UDP(dport=9)'}}], timeout: 1}
expect:
  - received: {node: h2, match: 'UDP(dport=7)', count: 1}
"""
    result = Runner(load_scenario_text(text, "u.yaml"), SimBackend()).run()
    times = dict(result.step_times)
    assert times["never"] - times["heard"] < 0.5  # the first wait ended at once
    failed = [o for o in result.outcomes if not o.passed]
    assert [(o.at, o.what.startswith("wait until h2 received")) for o in failed] == \
        [("never", True)] and "after 1.0 s" in failed[0].detail
    assert result.duration == pytest.approx(times["never"] + 1.0 + 0.1, abs=0.1)


# ---- guards: a run always ends, with a BackendError naming the culprit ----------------------

class StuckCore:
    """A timer that re-arms at the same instant ``spins`` times, then moves on."""

    def __init__(self, spins, step=0.0, fail=False):
        self.spins, self.step, self.fail = spins, step, fail
        self.at = 0.0

    def on_frame(self, iface, frame, now):
        return []

    def next_deadline(self):
        return self.at if self.spins > 0 else None

    def on_timer(self, now):
        if self.fail:
            raise struct.error("'H' format requires 0 <= number <= 65535")
        self.spins -= 1
        self.at = now + self.step
        return []


def lab_with(monkeypatch, core, **limits):
    sim_kind(monkeypatch, "stuck", lambda node, sc: core)
    b = SimBackend(**limits)
    b.up(scenario(extra_nodes=(Node("x1", "stuck"),)))
    return b


def test_a_timer_stuck_at_one_instant_ends_the_run_naming_the_node(monkeypatch):
    b = lab_with(monkeypatch, StuckCore(MAX_SPINS * 2))
    with pytest.raises(BackendError, match=rf"node x1: its timer fired {MAX_SPINS} times at "
                       r"0\.000000000 s .* stuck"):
        b.advance(1)
    b.down()
    b = lab_with(monkeypatch, StuckCore(MAX_SPINS // 2))   # re-arming a while is fine
    b.advance(1)
    b.down()


class PingCore:
    """Answers each frame from its timer at the arrival instant, ``limit`` times."""

    def __init__(self, limit, start):
        self.limit, self.wake = limit, 0.0 if start else None
        self.frame = frame(TO_H2)

    def on_frame(self, iface, frame, now):
        self.wake = now
        return []

    def next_deadline(self):
        return self.wake

    def on_timer(self, now):
        self.wake = None
        if self.limit == 0:
            return []
        self.limit -= 1
        return [Transmit("eth0", self.frame)]


def test_frames_for_a_node_are_progress_at_the_same_instant(monkeypatch):
    """Two nodes talking at zero latency fire their timers at one instant, each after a frame
    arrived: that is an exchange, not a stuck node."""
    sim_kind(monkeypatch, "ping",
             lambda node, sc: PingCore(2 * MAX_SPINS, start=node.name == "p1"))
    b = SimBackend(latency=0)
    b.up(Scenario("t", "<t>", "", (Node("p1", "ping"), Node("p2", "ping")),
                  (Link(ep("p1", "eth0", MAC["h1"]), ep("p2", "eth0", MAC["h2"])),), (), ()))
    b.advance(0.01)
    assert len(b.frames()) == 4 * MAX_SPINS and b.now() == 0.01
    b.down()


def test_a_timer_creeping_forward_is_stopped_by_the_event_bound(monkeypatch):
    b = lab_with(monkeypatch, StuckCore(10**9, step=1e-9), max_events=5000)
    with pytest.raises(BackendError, match=r"more than 5000 sim events .*node x1's timer"):
        b.advance(3600)
    b.down()


def test_a_model_that_raises_is_a_backend_error_naming_the_node(monkeypatch):
    b = lab_with(monkeypatch, StuckCore(1, fail=True))
    with pytest.raises(BackendError, match=r"node x1: its stuck model failed in on_timer: "
                       r"error: 'H' format"):
        b.advance(1)
    b.down()
    core = StuckCore(1)
    core.next_deadline = lambda: math.inf
    with pytest.raises(BackendError, match="node x1: its stuck model asked for a timer at inf"):
        lab_with(monkeypatch, core)


def test_the_largest_send_through_a_switch_fits_the_frame_limit():
    """A `send` of MAX_COUNT copies flooded by a 4-port switch: 4 captured frames a copy."""
    assert MAX_FRAMES >= 4 * MAX_COUNT
    sw4 = scenario(extra_links=(Link(ep("h4", "eth0", "02:00:00:04:00:00"),
                                     ep("s1", "p4", "02:00:00:09:04:00")),),
                   extra_nodes=(Node("h4", "host"),))
    n, data = 500, frame(BCAST_UDP)
    b = SimBackend(max_frames=4 * n)
    b.up(sw4)
    for _ in range(n):
        b.send("h1:eth0", data)
    b.advance(0.01)
    assert len(b.frames()) == 4 * n
    b.down()
    b = SimBackend(max_frames=4 * n - 1)
    b.up(sw4)
    for _ in range(n):
        b.send("h1:eth0", data)
    with pytest.raises(BackendError, match=rf"more than {4 * n - 1} frames in this run "
                       r"\(\d+ on link h\d:eth0 s1:p\d\): a forwarding loop, or more traffic"):
        b.advance(0.01)
    b.down()
