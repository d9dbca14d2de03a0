"""Seed 002 checks 14 and 15 on real namespaces: half-handoffs between two devices serving on
ftsslab's own TCP (``tcp: user``, D2.6) with an unmodified kernel client -- in the client
direction (Fig. 7: the client pipelines its second GET while d1 still streams the first
response) and on the cluster-to-client path (Fig. 8: d2 sends the rest of the response, the
switch's entry never changes)."""

from __future__ import annotations

import pytest

from ftsslab.fast.tch import (
    TCH_MESSAGE,
    TCH_MSG_DONE,
    TCH_MSG_UPDATE,
    TCH_OPEN,
    TCH_UDP_PORT,
    parse_tch_message,
)
from ftsslab.lab import frames, tcp
from tests.nas.veth_runs import passing_run

pytestmark = pytest.mark.root
D1, D2, CLIENT, VIP = "10.0.0.11", "10.0.0.12", "10.0.0.1", "10.0.0.100"
CLIENT_LINK = "c1:eth0 s1:p1"


@pytest.fixture(scope="module")
def half_run():
    """One run of scenarios/nas-half-client.yaml; it passed, so both bodies' hashes match."""
    return passing_run("nas-half-client")


@pytest.fixture(scope="module")
def response_run():
    """One run of scenarios/nas-half-response.yaml; it passed, so the body's hash matches."""
    return passing_run("nas-half-response")


def _frames(result, *, src: str | None = None, dst: str | None = None) -> list:
    """(frame, IP packet) of the run's capture by capture end, in time order."""
    out = []
    for f in sorted(result.frames, key=lambda f: f.time):
        if (src is None or f.src == src) and (dst is None or f.dst == dst):
            packet = frames.ip_payload(f.data)
            if packet is not None:
                out.append((f, packet))
    return out


def _tcp(packet: bytes):
    return tcp.decode(packet)


def _tch(packet: bytes) -> dict | None:
    d = frames.parse_udp(packet)
    if d is None or d.dport != TCH_UDP_PORT:
        return None
    return parse_tch_message(d.payload)


def _states(result, node: str, role: str) -> list[tuple[str, str]]:
    return [(d["old"], d["new"]) for e in result.events if e.node == node and e.kind == "tch"
            for d in [dict(kv.split("=", 1) for kv in e.detail.split() if "=" in kv)]
            if d.get("role") == role]


def _event(result, node: str, kind: str) -> dict:
    rep = [e for e in result.reports[node]["events"] if e["kind"] == kind]
    assert len(rep) == 1, rep
    return rep[0]


def _table(result) -> list[tuple]:
    return [(e["why"], e["old"], e["new"]) for e in result.reports["s1"]["events"]
            if e["kind"] == "table"]


def _updates(result, src: str) -> list[dict]:
    return [m for f, p in _frames(result, src=src)
            if (m := _tch(p)) is not None and m["ptype"] == TCH_MESSAGE
            and m["mtype"] == TCH_MSG_UPDATE]


def _duplicate_ack_runs(result) -> list[tuple[int, bool]]:
    """Each run of three or more pure ACKs of one number the client sent in a row: (its
    length, whether the segment it asks for then came). A rate-limited link drops a segment
    now and then on a loaded box, and three duplicate ACKs are TCP asking for it again; a
    segment the client found unacceptable would make it repeat the number without end."""
    runs, last, count = [], None, 0
    for f, p in _frames(result):
        s = _tcp(p) if f.link == CLIENT_LINK else None
        if s is None:
            continue
        to_client = f.dst == "c1:eth0"
        if to_client and s.payload and runs and not runs[-1][1] and s.seq == runs[-1][2]:
            runs[-1][1] = True
        if f.src == "c1:eth0" and not s.payload and s.flags == tcp.ACK:
            count = count + 1 if s.ack == last else 1
            last = s.ack
            if count == 3:
                runs.append([3, False, s.ack])
            elif count > 3:
                runs[-1][0] = count
    return [(n, came) for n, came, _ in runs]


def _no_duplicate_ack_storm(result) -> None:
    runs = _duplicate_ack_runs(result)
    assert all(came and n < 50 for n, came in runs), runs
    assert len(runs) < 5, runs  # a few losses, not a pattern


def _no_reset_on_the_client_link(result) -> None:
    segs = [s for f, p in _frames(result) if f.link == CLIENT_LINK
            and (s := _tcp(p)) is not None]
    assert segs and not [s for s in segs if s.flags & tcp.RST]


def test_fig9_state_traces_of_a_half_handoff(half_run):
    """Fig. 9 with HALF-ACTIVE: the first device IDLE -> OPEN -> ACTIVE -> WAIT -> HALF_ACTIVE
    (-> HALF_ACTIVE at finish()) -> DONE -> IDLE; the second IDLE -> OPEN -> ACTIVE (-> ACTIVE on
    each Complete) -> IDLE; the switch entry moved once, d1 -> d2, and only by XAP."""
    _, result = half_run
    assert _states(result, "d1", "first") == [
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "WAIT"), ("WAIT", "HALF_ACTIVE"),
        ("HALF_ACTIVE", "HALF_ACTIVE"), ("HALF_ACTIVE", "DONE"), ("DONE", "IDLE")]
    assert _states(result, "d2", "second") == [
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "ACTIVE"), ("ACTIVE", "ACTIVE"),
        ("ACTIVE", "IDLE")]
    assert _table(result) == [("placed", None, "d1"), ("xap", "d1", "d2"),
                              ("closed", "d2", None)]


def test_the_client_direction_goes_to_d2_while_d1_sends_the_response(half_run):
    """Check 14: after the XAP ack, client -> VIP frames reach d2 (the second GET among
    them) and hardly any reach d1, yet d1 goes on sending most of the first response -- its
    send window advanced by the client's ACKs that d2 relayed (Updates, path (11)). d2 sends
    the client no data before the Done."""
    _, result = half_run
    d1_out = _frames(result, src="d1:eth0")
    ack_at = next(f.time for f, p in _frames(result, dst="d1:eth0")
                  if (d := frames.parse_udp(p)) is not None and d.sport == 5016)
    to_d1 = [(f, s) for f, p in _frames(result, dst="d1:eth0")
             if (s := _tcp(p)) is not None and s.dst == VIP]
    late_to_d1 = [s for f, s in to_d1 if f.time > ack_at]
    sent_after = sum(len(s.payload) for f, p in d1_out
                     if f.time > ack_at and (s := _tcp(p)) is not None and s.src == VIP)
    assert sent_after > 2_000_000  # most of the 4 MB response after the switch moved
    assert len(late_to_d1) <= 20  # only what was in flight as the entry changed
    to_d2 = [s for f, p in _frames(result, dst="d2:eth0")
             if (s := _tcp(p)) is not None and s.dst == VIP]
    assert len(to_d2) > 500  # the client's ACKs of d1's data
    assert any(b"GET /small.bin" in s.payload for s in to_d2)
    assert not any(b"GET /small.bin" in s.payload for _, s in to_d1)
    done_at = next(f.time for f, p in d1_out
                   if (m := _tch(p)) is not None and m["ptype"] == TCH_MESSAGE
                   and m["mtype"] == TCH_MSG_DONE)
    d2_data = [f.time for f, p in _frames(result, src="d2:eth0")
               if (s := _tcp(p)) is not None and s.src == VIP and s.payload]
    assert d2_data and min(d2_data) > done_at


def test_d2_relays_the_clients_acks_and_d1s_window_advances_by_them(half_run):
    """Fig. 7 (11): d2's Updates carry the client's ACK number (snd_una), which only grows
    and covers most of the response; d1 took over a thousand of them, and they moved its
    SND.UNA by megabytes."""
    _, result = half_run
    updates = _updates(result, "d2:eth0")
    unas = [m["snd_una"] for m in updates]
    assert len(unas) > 100
    assert all(tcp.seq_after(b, a) or a == b for a, b in zip(unas, unas[1:], strict=False))
    assert (unas[-1] - unas[0]) % (1 << 32) > 2_000_000
    end = _event(result, "d1", "handoff-end")
    assert end["outcome"] == "HANDED_OFF" and end["type"] == "half-client"
    half = _event(result, "d1", "half-end")
    assert half["role"] == "send" and half["updates"] > 100 and half["acked"] > 2_000_000
    print(f"Fig. 7: {len(updates)} Updates d2 -> d1, d1 took {half['updates']}, "
          f"acked {half['acked']} bytes by them, half phase {end['ms']:.0f} ms")


def test_the_client_sees_no_reset_and_no_duplicate_ack_storm(half_run):
    """Check 14's "0 RST" and the consistency of what the client is sent: no RST either way
    on the client's link, and the client's pure ACKs never repeat one number three times
    running but to ask for a lost segment, which then comes (``_duplicate_ack_runs``)."""
    _, result = half_run
    _no_reset_on_the_client_link(result)
    _no_duplicate_ack_storm(result)
    _throughput(result, 4_300_000, "Fig. 7")


def _throughput(result, size: int, what: str) -> None:
    first = min(f.time for f in result.frames if f.link == CLIENT_LINK)
    last = max(f.time for f, p in _frames(result, dst="c1:eth0")
               if (s := _tcp(p)) is not None and s.payload and s.src == VIP)
    print(f"{what}: {size / 1e6:.1f} MB over one connection in {last - first:.2f} s, "
          f"{size * 8 / (last - first) / 1e6:.1f} Mbit/s ")


# ---- Fig. 8 (check 15) ---------------------------------------------------------------------


def test_fig9_traces_of_a_half_handoff_on_the_cluster_path(response_run):
    """Fig. 8 has no (7)-(10): the switch's entry is d1's from placement to close. The first
    device IDLE -> OPEN -> ACTIVE -> WAIT -> HALF_ACTIVE, and the client's FIN aborts it (B2.33)
    -> FAIL -> IDLE; the second IDLE -> OPEN -> ACTIVE (-> ACTIVE on Complete) -> IDLE."""
    _, result = response_run
    assert _table(result) == [("placed", None, "d1"), ("closed", "d1", None)]
    assert _states(result, "d1", "first") == [
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "WAIT"), ("WAIT", "HALF_ACTIVE"),
        ("HALF_ACTIVE", "FAIL"), ("FAIL", "IDLE")]
    assert _states(result, "d2", "second") == [
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "ACTIVE"), ("ACTIVE", "IDLE")]


def test_d2_sends_the_response_with_the_acks_d1_relays(response_run):
    """Check 15: d2 sends most of the body while d1 keeps receiving the client's segments and,
    until the client's FIN, sends the client nothing ("cannot send acknowledgments"); d1's
    Updates carry the client's sequence number as RCV.NXT (then its FIN's), and every data
    segment of d2 acknowledges exactly that -- the client's own sequence number in its
    segments -- and the client's growing ACK moves d2's SND.UNA."""
    _, result = response_run
    open_at = next(f.time for f, p in _frames(result, src="d1:eth0")
                   if (m := _tch(p)) is not None and m["ptype"] == TCH_OPEN)
    fin_at = next(f.time for f, p in _frames(result, dst="d1:eth0")
                  if (s := _tcp(p)) is not None and s.dst == VIP and s.flags & tcp.FIN)
    d2_data = [s for f, p in _frames(result, src="d2:eth0")
               if (s := _tcp(p)) is not None and s.src == VIP and s.payload]
    assert sum(len(s.payload) for s in d2_data) > 1_000_000  # (d1 drained 1 MiB first)
    d1_during = [s for f, p in _frames(result, src="d1:eth0") if open_at < f.time < fin_at
                 and (s := _tcp(p)) is not None and s.src == VIP]
    assert d1_during == []
    from_client = [s for f, p in _frames(result, dst="d1:eth0")
                   if open_at < f.time < fin_at and (s := _tcp(p)) is not None
                   and s.dst == VIP]
    assert len(from_client) > 500
    client_seq = {s.seq for s in from_client}
    assert len(client_seq) == 1  # the client sends no data after its GET
    assert {s.ack for s in d2_data} == client_seq
    updates = _updates(result, "d1:eth0")
    (seq,) = client_seq
    acks = [m["ack"] for m in updates]
    assert acks.count(seq) > 100 and set(acks) <= {seq, (seq + 1) % (1 << 32)}
    unas = [m["snd_una"] for m in updates]
    assert all(tcp.seq_after(b, a) or a == b for a, b in zip(unas, unas[1:], strict=False))
    half = _event(result, "d2", "half-end")
    assert half["role"] == "send" and half["updates"] > 100 and half["acked"] > 1_000_000
    print(f"Fig. 8: {len(updates)} Updates d1 -> d2, d2 took {half['updates']}, "
          f"acked {half['acked']} bytes by them")


def test_fig8_the_client_sees_no_reset_and_no_duplicate_ack_storm(response_run):
    _, result = response_run
    _no_reset_on_the_client_link(result)
    _no_duplicate_ack_storm(result)
    _throughput(result, 4_000_000, "Fig. 8")


# ---- both, read by tshark with ftsslab's dissectors ------------------------------------------


def _tshark_sequence(tmp_path, run, name: str) -> list[str]:
    """The TCH messages and XAP on d1's link as tshark names them, in order, without the
    Updates and the Acks that answer them (the relay of Fig. 7/8 (11), counted elsewhere)."""
    from ftsslab.lab.capture import write_capture
    from tests.wireshark.oracle import tshark_fields

    scenario, result = run
    pcap = tmp_path / f"{name}.pcapng"
    write_capture(pcap, scenario, [f for f in result.frames if "d1:" in (f.src + f.dst)],
                  result.events, "veth")
    fields = ["ip.src", "tch.msg.ptype", "tch.msg.mtype", "tch.msg.htype", "tch.msg.xid",
              "xap.operation"]
    rows = tshark_fields(pcap, "tch.msg.version || xap.operation", fields)
    updates = {(r["ip.src"], r["tch.msg.xid"]) for r in rows
               if r["tch.msg.ptype"] == "3" and r["tch.msg.mtype"] == "1"}
    out = []
    for r in rows:
        if r["xap.operation"]:
            out.append("xap:" + ("ack" if int(r["xap.operation"], 0) & 8 else "change"))
            continue
        other = D2 if r["ip.src"] == D1 else D1
        if r["tch.msg.mtype"] == "1" or (r["tch.msg.mtype"] == "6"
                                         and (other, r["tch.msg.xid"]) in updates):
            continue
        by = "d1" if r["ip.src"] == D1 else "d2"
        kind = {"1": "Open", "2": "OpenResponse"}.get(r["tch.msg.ptype"]) or {
            "2": "Fail", "3": "Done", "5": "Complete", "6": "Ack"}[r["tch.msg.mtype"]]
        out.append(f"{by}:{kind}" + (f"({r['tch.msg.htype']})" if kind == "Open" else ""))
    return out


@pytest.mark.tshark
def test_tshark_reads_the_half_handoffs_in_the_seeds_order(tmp_path, half_run, response_run):
    """Fig. 7: Open(half-client, htype 2) -> Open Response -> XAP change_connection -> its ack
    -> Complete -> Ack, then (d1's response acknowledged) Complete -> Ack -> Done -> Ack.
    Fig. 8: Open(half-cluster, htype 3) -> Open Response -> Complete -> Ack, no XAP at all,
    and the client's FIN's Fail -> Ack."""
    assert _tshark_sequence(tmp_path, half_run, "half-client") == [
        "d1:Open(2)", "d2:OpenResponse", "xap:change", "xap:ack", "d1:Complete", "d2:Ack",
        "d1:Complete", "d2:Ack", "d1:Done", "d2:Ack"]
    assert _tshark_sequence(tmp_path, response_run, "half-cluster") == [
        "d1:Open(3)", "d2:OpenResponse", "d1:Complete", "d2:Ack", "d1:Fail", "d2:Ack"]
