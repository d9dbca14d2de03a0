"""The NAS kinds' sim models (``nas/sim.py``, ``nas/tcb.py``): the veth processes' behaviour
on the sim's clock, with the same cores."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast import xap as wire
from ftsslab.lab import frames
from ftsslab.lab.backend import BackendError
from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import ScenarioErrors, load_scenario, load_scenario_text
from ftsslab.lab.sim import SimBackend
from ftsslab.lab.tcp import SYN, Tcb, TcpSegment, TcpState
from ftsslab.nas.cluster import file_bytes
from ftsslab.nas.repair import TcpCheckpoint
from ftsslab.nas.sim import NasDeviceSim, NasSwitchSim, bridge_mac, sim_nonces
from ftsslab.nas.tcb import checkpoint, snapshot

from .test_twins import FIRST, SCENARIOS

C1_MAC, D1_MAC, D2_MAC = "02:00:00:00:01:01", "02:00:00:00:0d:01", "02:00:00:00:0d:02"


def lab(placement="first", steps="", expect="", files="{/f.bin: {size: 300000, seed: 5}}",
        devices=2, rate="8mbit") -> str:
    nodes = "".join(f"  d{i}: {{kind: nas, files: {files}}}\n" for i in range(1, devices + 1))
    links = "".join(f"  - endpoints:\n      - {{node: d{i}, interface: eth0, mac: "
                    f"\"02:00:00:00:0d:0{i}\", ipv4: 10.0.0.1{i}/24}}\n"
                    f"      - {{node: s1, interface: p{i + 1}}}\n" for i in range(1, devices + 1))
    return f"""name: t
nodes:
  c1: {{kind: host}}
  s1: {{kind: nas-switch, vip: 10.0.0.100, address: 10.0.0.254/24, placement: {placement}}}
{nodes}links:
  - endpoints:
      - {{node: c1, interface: eth0, mac: "{C1_MAC}", ipv4: 10.0.0.1/24}}
      - {{node: s1, interface: p1}}
    impair: {{rate: {rate}}}
{links}steps:
{steps or "  - wait: 0.1"}
expect:
{expect or "  - logged: {node: s1, event: table, count: 0}"}
"""


def run(text: str):
    return Runner(load_scenario_text(text), SimBackend()).run()


def states(result, node: str) -> list[tuple[str, str]]:
    return [(e["old"], e["new"]) for e in result.reports[node]["events"] if e["kind"] == "tch"]


def sha(spec: dict) -> str:
    return hashlib.sha256(file_bytes(spec)).hexdigest()


def test_a_refused_handoff_is_abandoned_and_the_download_goes_on():
    """nas-handoff-refused.yaml's twin: no SYN/ACK from d2 (its link is down), SYN resent
    three times, ABANDONED; d1 never froze and serves the whole file."""
    steps = """  - link: {link: "d2:eth0 s1:p3", state: down}
  - name: get
    fetch: {node: c1, url: "http://10.0.0.100/f.bin", background: true}
  - wait: 0.05
  - handoff: {from: d1, to: d2}
  - wait: 5"""
    got = sha({"size": 300000, "seed": 5})
    expect = f"""  - command: {{step: get, contains: "200 {got} 300000"}}
  - logged: {{node: d1, event: handoff-end, with: {{outcome: ABANDONED}}, count: 1}}
  - logged: {{node: d1, event: freeze, count: 0}}
  - logged: {{node: d1, event: request, with: {{path: /f.bin, status: 200}}, count: 1}}"""
    result = run(lab(steps=steps, expect=expect))
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]
    assert states(result, "d1") == [("IDLE", "SYN_SENT")] + [("SYN_SENT", "SYN_SENT")] * 3 + [
        ("SYN_SENT", "CLOSED")]


def test_keep_alive_requests_follow_the_owner_across_devices():
    """One connection asks d1's file, then d2's: the second request moves it (claim 10)."""
    files = "{/d1/a.bin: {size: 4000, seed: 1}, /d2/b.bin: {size: 5000, seed: 2}}"
    a, b = sha({"size": 4000, "seed": 1}), sha({"size": 5000, "seed": 2})
    text = lab(files=files, steps="""  - name: get
    fetch: {node: c1, url: ["http://10.0.0.100/d1/a.bin", "http://10.0.0.100/d2/b.bin"]}""",
               expect=f"""  - command: {{step: get, contains: "200 {a} 4000"}}
  - command: {{step: get, contains: "200 {b} 5000"}}
  - logged: {{node: d2, event: request, with: {{path: /d2/b.bin}}, count: 1}}
  - logged: {{node: d1, event: handoff-end, with: {{to: d2, outcome: HANDED_OFF}}, count: 1}}""")
    text = text.replace("placement: first}", "placement: first, root: {/d1/: d1, /d2/: d2}}")
    result = run(text)
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]


@pytest.mark.parametrize("policy, devices", [("round-robin", ["d1", "d2", "d3", "d1"]),
                                             ("first", ["d1"] * 4),
                                             ("least-connections", ["d1", "d2", "d3", "d1"])])
def test_placement_policies(policy, devices):
    steps = "".join("  - fetch: {node: c1, url: \"http://10.0.0.100/f.bin\"}\n"
                    for _ in devices)
    result = run(lab(placement=policy, steps=steps.rstrip("\n"), devices=3, rate="1gbit",
                     files="{/f.bin: {size: 100, seed: 1}}"))
    placed = [e["new"] for e in result.reports["s1"]["events"]
              if e["kind"] == "table" and e["why"] == "placed"]
    assert placed == devices  # (least connections: an ended one's entry lingers 2 s)


def test_delayed_binding_hands_each_connection_to_the_owner():
    """nas-delayed.yaml's twin: the switch accepts, reads the path, and is the first device."""
    files = "{/d1/f.bin: {size: 30000, seed: 1}, /d2/f.bin: {size: 30000, seed: 2}}"
    steps = "".join(f"  - name: get{i}\n    fetch: {{node: c1, url: \"http://10.0.0.100/d{d}/f.bin\"}}\n"
                    for i, d in enumerate((1, 2, 1, 2)))
    expect = "".join(
        f"  - command: {{step: get{i}, contains: \"200 {sha({'size': 30000, 'seed': d})}\"}}\n"
        for i, d in enumerate((1, 2, 1, 2))) + """\
  - logged: {node: s1, event: bind, with: {path: /d1/f.bin, device: d1}, count: 2}
  - logged: {node: s1, event: bind, with: {path: /d2/f.bin, device: d2}, count: 2}
  - logged: {node: s1, event: handoff-end, with: {outcome: HANDED_OFF}, count: 4}
  - logged: {node: s1, event: table, with: {why: delayed}, count: 4}
  - logged: {node: d1, event: request, with: {path: /d1/f.bin, status: 200}, count: 2}
  - logged: {node: d2, event: request, with: {path: /d2/f.bin, status: 200}, count: 2}
  - received: {node: c1, match: 'TCP(flags="R")', count: 0}"""
    text = lab(placement="delayed", files=files, steps=steps.rstrip("\n"), expect=expect,
               rate="1gbit").replace("placement: delayed}",
                                     "placement: delayed, root: {/d1/: d1, /d2/: d2}}")
    result = run(text)
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]
    assert states(result, "s1")[:7] == [(a, b) for (_, _, a, b) in FIRST]


def test_handoff_without_a_connection_is_an_error():
    with pytest.raises(BackendError, match="serves no connection"):
        run(lab(steps="  - handoff: {from: d1, to: d2}"))


# ---- the switch model on its own -------------------------------------------------------------

@pytest.fixture
def switch():
    sc = load_scenario_text(lab())
    return NasSwitchSim(sc.node("s1"), sc), sc


def test_the_switch_answers_arp_for_the_vip_with_the_bridge_mac(switch):
    s, sc = switch
    out = s.on_frame("p1", frames.arp_request(C1_MAC, "10.0.0.1", "10.0.0.100"), 0.0)
    replies = [frames.parse_arp(t.frame) for t in out if t.port == "p1"]
    assert [(r.op, r.sender_mac) for r in replies if r] == [
        (2, frames.mac_bytes(bridge_mac(sc, "s1")))]


def test_internal_ports_and_addresses_are_dropped_at_client_ports(switch):
    s, _ = switch
    for dst, port in (("10.0.0.100", 5016), ("10.0.0.100", 4494), ("10.0.0.11", 80)):
        udp = frames.udp_packet(frames.Datagram("10.0.0.1", dst, 999, port, b"x"))
        assert s.on_frame("p1", frames.ether(bridge_mac(switch[1], "s1"), C1_MAC, 0x0800,
                                             udp), 0.0) == []
    assert s.counters["dropped_internal"] == 3


def test_xap_with_a_wrong_nonce_is_refused_and_counted(switch):
    s, _ = switch
    nonce = (sim_nonces(s.cluster)["d1"] + 1) & 0xFFFFFF
    msg = {"operation": wire.XAP_OP_SET, "nonce": nonce, "proto": 6, "sport": 1, "dport": 80,
           "xid": 1, "cluster_id": "10.0.0.254"}
    payload = wire.build_xap_udp([msg], [{"type": wire.XAP_TLV_CLIENT_IP,
                                          "client_ip": "10.0.0.1"}])
    udp = frames.udp_packet(frames.Datagram("10.0.0.11", "10.0.0.254", 40500, 5016, payload))
    assert s.on_frame("p2", frames.ether(bridge_mac(switch[1], "s1"), D1_MAC, 0x0800, udp),
                      0.0) == []
    assert s.xap.stats["bad_nonce"] == 1 and s.entries() == []


def test_a_syn_is_placed_and_forwarded_with_l2_nat(switch):
    s, sc = switch
    syn = TcpSegment("10.0.0.1", "10.0.0.100", 40000, 80, 1, 0, SYN).encode()
    out = s.on_frame("p1", frames.ether(bridge_mac(sc, "s1"), C1_MAC, 0x0800, syn), 0.0)
    assert [(t.port, t.frame[:6]) for t in out] == [("p2", frames.mac_bytes(D1_MAC))]
    assert s.report()["entries"][0]["device"] == "d1"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["p1", "p2", "p3", "p9"]))
def test_the_models_never_raise_on_arbitrary_frames(data, port):
    sc = load_scenario_text(lab())
    delayed = load_scenario_text(lab(placement="delayed").replace(
        "placement: delayed}", "placement: delayed, root: {/: d1}}"))
    pair = load_scenario(SCENARIOS / "nas-twins-switch-handoff.yaml")  # (Fig. 12)
    models = [NasSwitchSim(sc.node("s1"), sc), NasSwitchSim(delayed.node("s1"), delayed),
              NasSwitchSim(pair.node("s1"), pair), NasSwitchSim(pair.node("s2"), pair)]
    d, paired = NasDeviceSim(sc.node("d1"), sc), NasDeviceSim(pair.node("d1"), pair)
    vip_tcp = frames.ipv4("10.0.0.1", "10.0.0.100", 6, data)
    for frame in (data, b"\xff" * 12 + b"\x08\x00" + data, b"\xff" * 12 + b"\x08\x06" + data,
                  b"\xff" * 12 + b"\x08\x00" + vip_tcp):
        for s in models:
            s.on_frame(port, frame, 0.0)
            s.on_timer(10.0)
        d.on_frame("eth0", frame, 0.0)
        d.on_timer(10.0)
        for iface in ("eth0", "eth1"):
            paired.on_frame(iface, frame, 0.0)
        paired.on_timer(10.0)


def test_malformed_frames_are_counted():
    sc = load_scenario_text(lab())
    s, d = NasSwitchSim(sc.node("s1"), sc), NasDeviceSim(sc.node("d1"), sc)
    s.on_frame("p1", b"short", 0.0)
    assert s.core.stats["malformed"] == 1
    bad_tcp = bytearray(frames.ipv4("10.0.0.12", "10.0.0.11", 6, b"\x00" * 20))
    bad_tcp[20 + 12] = 0x20  # data offset 2 words: not a TCP header
    d.on_frame("eth0", frames.ether(D1_MAC, D2_MAC, 0x0800, bytes(bad_tcp)), 0.0)
    assert d.counters["tch_malformed"] == 1


# ---- the checkpoint a handoff carries --------------------------------------------------------

def test_a_modelled_tcb_travels_as_the_veth_checkpoint():
    client, segs = Tcb.connect(("10.0.0.1", 40000), ("10.0.0.100", 80), 9, 0.0)
    server, segs = Tcb.accept(segs[0], 77, 0.0)
    for seg in client.on_segment(segs[0], 0.0):
        server.on_segment(seg, 0.0)
    server.write(b"abc" * 1000, 0.0)
    cp = checkpoint(server.snapshot(), 1.5)
    again = TcpCheckpoint.unpack(cp.pack())
    assert again == cp and again.snd_nxt == (server.snd_una + 3000) % (1 << 32)
    assert (again.send_queue, again.unsent, again.timestamp) == (b"abc" * 1000, 0, 1500)
    restored = Tcb.restore(snapshot(again))
    assert restored.state is TcpState.REPAIR and restored.snapshot is not None
    restored.leave_repair(2.0)
    assert restored.snapshot() == server.snapshot()


@pytest.mark.parametrize("option", ["proxy_limit", "ask_above"])
def test_answers_by_proxy_are_refused_in_the_sim_not_run_wrong(option):
    text = lab().replace("  d1: {kind: nas, files:", f"  d1: {{kind: nas, {option}: 1024, files:")
    if option == "ask_above":
        text = text.replace("placement: first}", "placement: first, tch: messages}")
    with pytest.raises(BackendError, match=f"{option} .* not modelled in the sim"):
        SimBackend().up(load_scenario_text(text))


def test_asking_for_a_connection_needs_the_second_embodiment():
    text = lab().replace("  d1: {kind: nas, files:", "  d1: {kind: nas, ask_above: 1024, files:")
    with pytest.raises(ScenarioErrors, match=r"Open \(initiator=second\)"):
        load_scenario_text(text)


def test_xap_on_the_flows_packets_is_refused_in_the_sim_not_run_wrong():
    text = lab().replace("placement: first}", "placement: first, xap: tcp-option}")
    with pytest.raises(BackendError, match="xap: tcp-option is not modelled in the sim"):
        SimBackend().up(load_scenario_text(text))


def test_a_health_step_needs_the_switchs_failover_in_the_sim_as_on_veth():
    b = SimBackend()
    b.up(load_scenario_text(lab()))
    with pytest.raises(BackendError, match="d1: health predicted-fail: .*nobody hears"):
        b.set_health("d1", "predicted-fail")
    b.down()
    text = lab().replace("placement: first}", "placement: first, failover: true}")
    b.up(load_scenario_text(text))
    b.advance(0.2)  # both devices heard
    with pytest.raises(BackendError, match="no health 'sick'"):
        b.set_health("d1", "sick")
    b.set_health("d1", "degraded")
    b.advance(0.01)  # one heartbeat at once, not at the next period
    health = [(e.node, e.detail) for e in b.events() if e.kind == "health"]
    assert health[-3:] == [("d1", "degraded"), ("d1", "health=DEGRADED"),
                           ("s1", "device=d1 new=DEGRADED old=UP why=DEGRADED")]
    b.down()
