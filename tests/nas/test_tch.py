# SPDX-License-Identifier: GPL-2.0-or-later
"""The first embodiment's TCH session (seed 002 Figs. 4A/4B/5, checks 6-11): the wire order as
the Scapy layer reads it, every negative path, the retransmission exits, illegal calls, and
random loss, duplication and reordering between the two devices."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP

from ftsslab.layers.tch import TCHEndpoint, TCHUpdate, tch_flags
from ftsslab.nas import tch as T
from ftsslab.nas.segment import ACK, FIN, RST, SYN, Segment, decode
from ftsslab.nas.tch import (
    FIRST_TRANSITIONS,
    SECOND_TRANSITIONS,
    Finished,
    FirstState,
    Morph,
    Outcome,
    ProtocolError,
    Reprogram,
    Restore,
    SecondState,
    Send,
    StateChanged,
    TchFirst,
    TchListener,
    TchPair,
    TchProtocolError,
)

D1, D2, CLIENT = ("10.0.0.11", 40000), ("10.0.0.12", 80), ("10.0.0.1", 51000)
STATE = bytes(range(256)) * 20  # 5120 bytes: four data segments
UPDATE = (0xDEADBEEF, 0x01020304)
RTO, RETRIES = 0.2, 5
HND, SET_, END_ = 4, 2, 1
F, S = FirstState, SecondState


def new_pair(state=STATE, update=UPDATE, net=None) -> TchPair:
    first = TchFirst(D1, D2, CLIENT, isn=1000, rto=RTO, max_retries=RETRIES)
    return TchPair(first, TchListener(*D2, rto=RTO, max_retries=RETRIES), state, update, net=net)


def kind(seg: Segment) -> str:
    """What a segment is in Fig. 5's terms."""
    if seg.flags & RST:
        return "RST"
    if seg.flags & SYN:
        return "SYN/ACK" if seg.flags & ACK else "SYN"
    if seg.flags & FIN:
        return "FIN"
    if seg.tch & SET_:
        return "SET"
    if seg.tch & END_:
        return "END"
    return "DATA" if seg.payload else "ACK"


def sender(seg: Segment) -> str:
    return "d1" if seg.src == D1[0] else "d2"


def sent(pair: TchPair, who: str | None = None, what: str | None = None) -> list[Segment]:
    return [s for _, s in pair.wire
            if (who is None or sender(s) == who) and (what is None or kind(s) == what)]


def states(pair: TchPair, role: str) -> list[str]:
    """The run log's state sequence of one role: first old state, then every new one."""
    changes = [a for a in pair.log if isinstance(a, StateChanged) and a.role == role]
    return [changes[0].old.name] + [a.new.name for a in changes] if changes else []


def finished(pair: TchPair, role: str) -> list[Finished]:
    peer = D2 if role == "first" else D1
    return [a for a in pair.log if isinstance(a, Finished) and a.peer == peer]


def of(pair: TchPair, cls) -> list:
    return [a for a in pair.log if isinstance(a, cls)]


def outcomes(pair: TchPair) -> tuple[Outcome, list[Outcome]]:
    return pair.first.outcome, [f.outcome for f in finished(pair, "second")]


def only(pred, change):
    """A net that applies ``change`` (returning None drops) to the segments ``pred`` picks;
    every segment arrives after 1 ms."""
    def net(seg):
        if pred(seg):
            seg = change(seg)
        return [] if seg is None else [(0.001, seg)]
    return net


def first_n(n: int, pred):
    """A predicate true for the first ``n`` segments ``pred`` picks."""
    seen = [0]

    def pick(seg):
        if pred(seg):
            seen[0] += 1
            return seen[0] <= n
        return False
    return pick


def is_(who: str, what: str):
    return lambda seg: sender(seg) == who and kind(seg) == what


# --- check 6: the wire order, read by the Scapy layer ------------------------------------


def test_happy_path_wire_order():
    pair = new_pair()
    pair.run()
    order = [(sender(s), kind(s)) for _, s in pair.wire]
    assert order == [
        ("d1", "SYN"), ("d2", "SYN/ACK"), ("d1", "ACK"),
        *[("d1", "DATA")] * 4, *[("d2", "ACK")] * 4,
        ("d1", "SET"), ("d2", "SET"), ("d1", "END"), ("d2", "FIN"), ("d1", "FIN"),
    ]
    assert outcomes(pair) == (Outcome.HANDED_OFF, [Outcome.HANDED_OFF])
    assert not pair.listener.sessions


def test_happy_path_as_scapy_dissects_it():
    pair = new_pair()
    pair.run()
    pkts = [IP(s.encode()) for _, s in pair.wire]
    for (_, seg), pkt in zip(pair.wire, pkts, strict=True):
        assert decode(bytes(pkt)) == seg
        assert "HND" in tch_flags(pkt)  # every segment is part of the TCH session
    syn, synack = pkts[0], pkts[1]
    assert syn[TCP].flags == "S" and tch_flags(syn) == {"HND"}
    endpoints = [o for o in syn[TCP].options if o[0] == "TCHEndpoint"]
    assert endpoints == [("TCHEndpoint", TCHEndpoint(CLIENT[1], CLIENT[0]))]  # the CLIENT's
    assert (syn.src, syn[TCP].sport, syn.dst, syn[TCP].dport) == (*D1, *D2)  # port P1
    assert synack[TCP].flags == "SA" and tch_flags(synack) == {"HND"}
    by_kind = {kind(s): pkt for (_, s), pkt in zip(pair.wire, pkts, strict=True)
               if sender(s) == "d1"}
    set_pkt = by_kind["SET"]
    assert tch_flags(set_pkt) == {"HND", "SET"}
    assert set_pkt[TCP].options == [("NOP", None), ("NOP", None),
                                    ("TCHUpdate", TCHUpdate(*UPDATE)), ("EOL", None)]
    assert set_pkt[TCP].dataofs == 5 + 16 // 4  # the data offset counts the options
    assert tch_flags(by_kind["END"]) == {"HND", "END"} and not by_kind["END"][TCP].options
    data = b"".join(bytes(p[TCP].payload) for (_, s), p in zip(pair.wire, pkts, strict=True)
                    if kind(s) == "DATA")
    assert data == STATE and all(len(p[TCP].payload) <= 1460 for p in pkts)
    for (_, seg), pkt in zip(pair.wire, pkts, strict=True):
        if sender(seg) == "d2":  # never option 255 or 254, never END
            assert not {o[0] for o in pkt[TCP].options} & {"TCHEndpoint", "TCHUpdate", 254, 255}
            assert "END" not in tch_flags(pkt)
    second_set = [p for (_, s), p in zip(pair.wire, pkts, strict=True)
                  if (sender(s), kind(s)) == ("d2", "SET")]
    assert [tch_flags(p) for p in second_set] == [{"HND", "SET"}]
    assert second_set[0][TCP].flags == "A"  # SET+ACK


def test_happy_path_actions_and_state_sequences():
    pair = new_pair()
    pair.run()
    [restore] = of(pair, Restore)
    assert (restore.client, restore.update, restore.state, restore.peer) == (CLIENT, UPDATE,
                                                                            STATE, D1)
    assert of(pair, Reprogram) == [Reprogram(CLIENT, D2)]
    assert of(pair, Morph) == [Morph(CLIENT, D1)]
    assert states(pair, "first") == ["IDLE", "SYN_SENT", "ESTABLISHED", "TRANSFER", "SET_SENT",
                                     "SWITCHING", "AWAIT_FIN", "CLOSED"]
    assert states(pair, "second") == ["LISTEN", "SYN_RCVD", "ESTABLISHED", "RESTORING",
                                      "SET_RCVD", "MORPH", "FIN_WAIT", "CLOSED"]
    # causal order: Restore before Reprogram (D2.1's safe order), Reprogram before Morph
    log = pair.log
    assert log.index(restore) < log.index(of(pair, Reprogram)[0]) < log.index(of(pair, Morph)[0])
    assert str(of(pair, StateChanged)[0]) == "first IDLE->SYN_SENT (open the TCH session)"


def test_empty_and_largest_state():
    pair = new_pair(state=b"")
    pair.run()
    assert not sent(pair, "d1", "DATA") and of(pair, Restore)[0].state == b""
    big = bytes(i % 251 for i in range(T.MAX_STATE))
    pair = new_pair(state=big)
    pair.run()
    assert of(pair, Restore)[0].state == big
    assert outcomes(pair) == (Outcome.HANDED_OFF, [Outcome.HANDED_OFF])
    first = TchFirst(D1, D2, CLIENT, isn=1)
    first.open(0.0)
    first.on_segment(Segment(*D2[:1], D1[0], D2[1], D1[1], 5, 2, SYN | ACK, HND), 0.0)
    with pytest.raises(ValueError, match="at most"):
        first.handoff(big + b"x", UPDATE, 0.0)
    with pytest.raises(ValueError, match="32-bit"):
        first.handoff(b"", (1 << 32, 0), 0.0)
    assert first.state is F.ESTABLISHED


# --- check 7: negative paths -------------------------------------------------------------


def syn(tch=HND, endpoint=(CLIENT[1], CLIENT[0]), seq=7) -> Segment:
    return Segment(D1[0], D2[0], D1[1], D2[1], seq, 0, SYN, tch, endpoint=endpoint)


@pytest.mark.parametrize("seg", [syn(endpoint=None), syn(tch=0), syn(tch=0, endpoint=None)],
                         ids=["HND without endpoint", "no HND", "neither"])
def test_refused_syn_gets_rst_and_leaves_no_session(seg):
    listener = TchListener(*D2)
    [reply] = listener.on_segment(seg, 0.0)
    rst = reply.segment
    assert rst.flags == RST | ACK and rst.ack == seg.seq + 1 and rst.seq == 0
    assert (rst.src, rst.sport, rst.dst, rst.dport) == (*D2, *D1)
    assert rst.tch == seg.tch & HND and rst.endpoint is None and rst.update is None
    assert listener.sessions == {} and listener.next_deadline() is None


def test_first_abandons_on_a_listeners_rst():
    first = TchFirst(D1, D2, CLIENT, isn=6)
    first.open(0.0)
    [reply] = TchListener(*D2).on_segment(syn(endpoint=None, seq=6), 0.0)
    acts = first.on_segment(reply.segment, 0.01)
    assert first.outcome is Outcome.ABANDONED and not [a for a in acts if isinstance(a, Send)]


def test_set_without_update_resets_and_the_session_stays_on_d1():
    strip = only(is_("d1", "SET"), lambda s: dataclasses.replace(s, update=None))
    pair = new_pair(net=strip)
    pair.run()
    assert [r.reason for r in finished(pair, "second")] == ["SET without update option"]
    assert outcomes(pair) == (Outcome.RESUME, [Outcome.ABORTED])  # d1 restores its own copy
    assert not of(pair, Restore) and not of(pair, Reprogram) and not of(pair, Morph)
    assert [kind(s) for s in sent(pair, "d2")][-1] == "RST"
    assert not pair.listener.sessions


def test_first_ignores_endpoint_and_update_from_the_second():
    bogus = dict(endpoint=(1, "192.0.2.99"), update=(5, 6))
    pair = new_pair(net=only(lambda s: sender(s) == "d2",
                             lambda s: dataclasses.replace(s, **bogus)))
    pair.run()
    assert sent(pair, "d2", "SET")  # the tampered segments were delivered
    assert outcomes(pair) == (Outcome.HANDED_OFF, [Outcome.HANDED_OFF])
    assert of(pair, Reprogram) == [Reprogram(CLIENT, D2)]
    assert of(pair, Restore)[0].update == UPDATE


def test_synack_without_hnd_abandons_and_d1_keeps_serving():
    pair = new_pair(net=only(is_("d2", "SYN/ACK"), lambda s: dataclasses.replace(s, tch=0)))
    pair.run()
    assert pair.first.outcome is Outcome.ABANDONED
    assert [kind(s) for s in sent(pair, "d1")] == ["SYN", "RST"]  # no state, no SET
    rst = sent(pair, "d1", "RST")[0]
    synack = sent(pair, "d2", "SYN/ACK")[0]
    assert rst.seq == synack.ack
    # 0 RST to the client: the TCH core only ever talks to the second device
    assert all((s.dst, s.dport) == D2 for s in sent(pair, "d1"))
    assert not of(pair, Reprogram) and not of(pair, Restore)
    assert states(pair, "first") == ["IDLE", "SYN_SENT", "CLOSED"]


def test_a_stack_without_tch_answering_again_gets_rst():
    first = TchFirst(D1, D2, CLIENT, isn=99)
    first.open(0.0)
    plain = Segment(D2[0], D1[0], D2[1], D1[1], 5000, 100, SYN | ACK)
    first.on_segment(plain, 0.001)
    acts = first.on_segment(plain, 0.5)  # the kernel resends its SYN/ACK
    [rst] = [a.segment for a in acts if isinstance(a, Send)]
    assert rst.flags == RST and rst.seq == 100
    assert first.on_segment(dataclasses.replace(plain, flags=RST), 0.6) == []


# --- check 8: retransmission exits -------------------------------------------------------


def test_lost_set_is_resent_after_the_rto_and_completes():
    pair = new_pair(net=only(first_n(1, is_("d1", "SET")), lambda s: None))
    pair.run()
    times = [t for t, s in pair.wire if (sender(s), kind(s)) == ("d1", "SET")]
    assert len(times) == 2 and times[1] - times[0] == pytest.approx(RTO)
    assert outcomes(pair) == (Outcome.HANDED_OFF, [Outcome.HANDED_OFF])
    assert states(pair, "first")[4:] == ["SET_SENT", "SET_SENT", "SWITCHING", "AWAIT_FIN",
                                         "CLOSED"]
    resend = [a for a in of(pair, StateChanged) if a.old is a.new is F.SET_SENT]
    assert [a.why for a in resend] == ["RTO #1: resend SET"]
    assert states(pair, "second")[-4:] == ["SET_RCVD", "MORPH", "FIN_WAIT", "CLOSED"]


def test_lost_end_second_resends_set_until_end_arrives():
    pair = new_pair(net=only(first_n(2, is_("d1", "END")), lambda s: None))
    pair.run()
    assert len(sent(pair, "d2", "SET")) == 3 and len(sent(pair, "d1", "END")) == 3
    assert outcomes(pair) == (Outcome.HANDED_OFF, [Outcome.HANDED_OFF])
    assert states(pair, "second")[-6:] == ["SET_RCVD", "SET_RCVD", "SET_RCVD", "MORPH",
                                           "FIN_WAIT", "CLOSED"]
    assert states(pair, "first")[-4:] == ["AWAIT_FIN", "AWAIT_FIN", "AWAIT_FIN", "CLOSED"]
    set_times = [t for t, s in pair.wire if (sender(s), kind(s)) == ("d2", "SET")]
    gaps = [round(b - a, 9) for a, b in zip(set_times, set_times[1:], strict=False)]
    assert gaps == [RTO, 2 * RTO]


@pytest.mark.parametrize(("what", "lost", "resent", "count"),
                         [("SET", 1, "SET", 2), ("SYN/ACK", 1, "SYN", 2), ("ACK", 4, "DATA", 8)])
def test_lost_second_segments_are_resent(what, lost, resent, count):
    """d2's SET, SYN/ACK or data ACKs lost: d1 resends what set up its state."""
    pair = new_pair(net=only(first_n(lost, is_("d2", what)), lambda s: None))
    pair.run()
    assert len(sent(pair, "d1", resent)) == count
    assert outcomes(pair) == (Outcome.HANDED_OFF, [Outcome.HANDED_OFF])
    assert len(of(pair, Morph)) == 1


def test_lost_fins_are_resent():
    pair = new_pair(net=only(first_n(2, is_("d1", "FIN")), lambda s: None))
    pair.run()
    assert len(sent(pair, "d2", "FIN")) == 3 and len(sent(pair, "d1", "FIN")) == 3
    assert outcomes(pair) == (Outcome.HANDED_OFF, [Outcome.HANDED_OFF])
    assert states(pair, "first")[-3:] == ["CLOSED", "CLOSED", "CLOSED"]


# --- check 9: the second device dies ----------------------------------------------------


def dead_after(first_kind: str):
    """Everything to and from d2 is lost once d1 sent a segment of ``first_kind``."""
    dead = [False]

    def net(seg):
        if sender(seg) == "d1" and kind(seg) == first_kind:
            dead[0] = True
        return [] if dead[0] else [(0.001, seg)]
    return net


def backoff_total(retries: int = RETRIES) -> float:
    return sum(RTO * (1 << i) for i in range(retries + 1))


def test_d2_dead_in_set_sent_resumes():
    pair = new_pair(net=dead_after("SET"))
    pair.run()
    assert pair.first.outcome is Outcome.RESUME
    assert len(sent(pair, "d1", "SET")) == 1 + RETRIES
    assert kind(sent(pair, "d1")[-1]) == "RST"
    [start] = [t for t, s in pair.wire if s is sent(pair, "d1", "SET")[0]]
    [end] = [t for t, s in pair.wire if s is sent(pair, "d1", "RST")[0]]
    assert end - start == pytest.approx(backoff_total())
    assert states(pair, "first")[-2:] == ["SET_SENT", "CLOSED"]
    assert not of(pair, Reprogram)


def test_d2_dead_during_transfer_resumes_and_before_freeze_abandons():
    pair = new_pair(net=dead_after("DATA"))
    pair.run()
    assert pair.first.outcome is Outcome.RESUME
    assert states(pair, "first")[-2:] == ["TRANSFER", "CLOSED"]
    pair = new_pair(net=lambda seg: [])
    pair.run()
    assert pair.first.outcome is Outcome.ABANDONED and len(sent(pair, "d1", "SYN")) == 1 + RETRIES


def test_keepalive_keeps_an_idle_session_and_ends_an_orphan():
    """A session waiting in ESTABLISHED (predictive, B2.24) is probed after a silence; d1
    answers, and an orphan (d1 gone, or its RST lost) is closed."""
    first, listener = established()
    second = listener.sessions[D1]
    patience = RTO * (1 << (RETRIES + 2))
    assert listener.next_deadline() == pytest.approx(patience)
    acts = deliver(first, listener, listener.on_timer(patience), patience)
    assert [a.why for a in acts] == ["RTO #1: resend keepalive probe"]
    assert listener.next_deadline() == pytest.approx(2 * patience)  # d1's ACK reset it
    now = 2 * patience
    while listener.sessions:  # d1 has gone: nothing answers
        acts = listener.on_timer(now)
        now = listener.next_deadline() or now
    assert [kind(a.segment) for a in acts if isinstance(a, Send)] == ["RST"]
    assert outcome_of(acts, D1) == [Outcome.ABORTED] and second.tries == RETRIES
    first, listener = established()  # d1 aborted and its RST was lost: it answers the probe
    deliver(first, listener, first.resume(0.0), 0.0, drop=lambda s: True)
    acts = deliver(first, listener, listener.on_timer(patience), patience)
    assert outcome_of(acts, D1) == [Outcome.ABORTED] and not listener.sessions


def test_no_fin_after_end_is_taken_as_handed_off():
    pair = new_pair(net=dead_after("END"))
    pair.run()
    assert pair.first.outcome is Outcome.HANDED_OFF
    assert "no FIN after END" in finished(pair, "first")[0].reason
    # the second device stayed in SET_RCVD and gave up first (its RST was lost)
    assert [f.reason for f in finished(pair, "second")] == ["no END"]


# --- checks 10, 11: close during the handoff, resume, illegal calls ---------------------


def deliver(first: TchFirst, listener: TchListener, acts: list, now: float,
            drop=lambda seg: False) -> list:
    """Route Send actions between the two at once until quiet; the other actions, in order."""
    out, queue = [], list(acts)
    while queue:
        act = queue.pop(0)
        if not isinstance(act, Send):
            out.append(act)
        elif not drop(act.segment):
            core = listener if (act.segment.dst, act.segment.dport) == D2 else first
            queue += core.on_segment(act.segment, now)
    return out


def established() -> tuple[TchFirst, TchListener]:
    first, listener = TchFirst(D1, D2, CLIENT, isn=500), TchListener(*D2)
    deliver(first, listener, first.open(0.0), 0.0)
    assert first.state is F.ESTABLISHED
    assert listener.sessions[D1].state is S.ESTABLISHED
    return first, listener


def set_sent() -> tuple[TchFirst, TchListener]:
    first, listener = established()
    acts = deliver(first, listener, first.handoff(STATE, UPDATE, 0.0), 0.0)
    assert [a for a in acts if isinstance(a, Restore)] and first.state is F.SET_SENT
    return first, listener


def of_kind(acts: list, cls) -> list:
    return [a for a in acts if isinstance(a, cls)]


def outcome_of(acts: list, peer) -> list[Outcome]:
    return [a.outcome for a in acts if isinstance(a, Finished) and a.peer == peer]


@pytest.mark.parametrize("restored", [False, True])
def test_client_closed_on_d1_aborts_both(restored):
    first, listener = set_sent()
    if restored:
        deliver(first, listener, listener.restored(D1, 0.0), 0.0, drop=lambda s: True)
        assert listener.sessions[D1].state is S.SET_RCVD
    acts = deliver(first, listener, first.client_closed(0.1), 0.1)
    assert outcome_of(acts, D2) == [Outcome.ABORTED] and outcome_of(acts, D1) == [Outcome.ABORTED]
    assert not listener.sessions and listener.next_deadline() is None
    assert first.next_deadline() is None


def test_client_closed_on_d2_aborts_both():
    first, listener = set_sent()
    acts = deliver(first, listener, listener.client_closed(D1, 0.1), 0.1)
    assert outcome_of(acts, D1) == [Outcome.ABORTED]
    assert outcome_of(acts, D2) == [Outcome.RESUME]  # d1 finishes the client session itself
    assert not listener.sessions


def test_client_closed_before_the_freeze():
    first, listener = established()
    acts = deliver(first, listener, first.client_closed(0.1), 0.1)
    assert outcome_of(acts, D2) == [Outcome.ABORTED] and outcome_of(acts, D1) == [Outcome.ABORTED]


def test_resume_in_switching_and_before_the_freeze():
    first, listener = set_sent()
    acts = deliver(first, listener, listener.restored(D1, 0.0), 0.0)
    assert acts[-1] == Reprogram(CLIENT, D2) and first.state is F.SWITCHING
    acts = deliver(first, listener, first.resume(0.1), 0.1)  # e.g. the XAP ack never came
    assert outcome_of(acts, D2) == [Outcome.RESUME] and outcome_of(acts, D1) == [Outcome.ABORTED]
    first, listener = established()
    acts = deliver(first, listener, first.resume(0.1), 0.1)
    assert outcome_of(acts, D2) == [Outcome.ABANDONED]


def test_restore_failed_resets_and_d1_resumes():
    first, listener = set_sent()
    acts = deliver(first, listener, listener.restore_failed(D1, "EPERM", 0.0), 0.0)
    assert [a.reason for a in acts if isinstance(a, Finished) and a.peer == D1] == [
        "restore failed: EPERM"]
    assert outcome_of(acts, D2) == [Outcome.RESUME] and not listener.sessions


def test_rst_from_the_peer():
    first, listener = established()
    acts = deliver(first, listener, listener.client_closed(D1, 0.0), 0.0)
    assert outcome_of(acts, D2) == [Outcome.ABANDONED]  # nothing was frozen
    first, listener = set_sent()
    second = listener.sessions[D1]
    rst = Segment(*D2[:1], D1[0], D2[1], D1[1], second.snd_nxt + 1, 0, RST, HND)
    assert first.on_segment(rst, 0.0) == []  # not at RCV.NXT: ignored (RFC 5961)
    acts = first.on_segment(dataclasses.replace(rst, seq=second.snd_nxt), 0.0)
    assert outcome_of(acts, D2) == [Outcome.RESUME]


def from_d1(second, flags, tch=HND, seq=None, ack=None) -> Segment:
    return Segment(D1[0], D2[0], D1[1], D2[1], second.rcv_nxt if seq is None else seq,
                   second.snd_nxt if ack is None else ack, flags, tch)


def from_d2(first, flags, tch=HND, seq=None, ack=None) -> Segment:
    return Segment(D2[0], D1[0], D2[1], D1[1], first.rcv_nxt if seq is None else seq,
                   first.snd_nxt if ack is None else ack, flags, tch)


def sends(acts: list) -> list[str]:
    return [kind(a.segment) for a in acts if isinstance(a, Send)]


def test_segments_off_the_numbers_are_ignored():
    """Control segments count only at RCV.NXT and with the right ACK (old duplicates)."""
    first, listener = set_sent()
    second = listener.sessions[D1]
    deliver(first, listener, listener.restored(D1, 0.0), 0.0)
    deliver(first, listener, first.switch_updated(0.0), 0.0, drop=lambda s: True)  # END lost
    assert (first.state, second.state) == (F.AWAIT_FIN, S.SET_RCVD)
    end = from_d1(second, ACK, HND | END_)
    assert listener.on_segment(dataclasses.replace(end, ack=second.snd_nxt + 1), 0.1) == []
    assert listener.on_segment(dataclasses.replace(end, seq=second.rcv_nxt + 1), 0.1) == []
    acts = listener.on_segment(end, 0.1)
    assert of_kind(acts, Morph) and sends(acts) == ["FIN"] and second.state is S.FIN_WAIT
    assert listener.on_segment(end, 0.1) == []  # END again: nothing (FIN_WAIT resends FIN)
    fin = from_d2(first, FIN | ACK)
    assert first.on_segment(dataclasses.replace(fin, seq=first.rcv_nxt + 1), 0.1) == []
    acts = first.on_segment(fin, 0.1)
    assert sends(acts) == ["FIN"] and first.outcome is Outcome.HANDED_OFF
    assert listener.on_segment(from_d1(second, FIN | ACK, ack=second.snd_nxt - 1), 0.1) == []
    acts = listener.on_segment(acts[-2].segment, 0.1)
    assert outcome_of(acts, D1) == [Outcome.HANDED_OFF] and not listener.sessions


def test_early_fin_is_a_reset():
    first, listener = set_sent()
    second = listener.sessions[D1]
    acts = first.on_segment(from_d2(first, FIN | ACK), 0.0)
    assert sends(acts) == ["RST"] and first.outcome is Outcome.RESUME
    acts = listener.on_segment(from_d1(second, FIN | ACK), 0.0)
    assert sends(acts) == ["RST"] and outcome_of(acts, D1) == [Outcome.ABORTED]


def test_an_old_duplicate_syn_opens_a_session_that_never_establishes():
    """After a handoff, a late copy of d1's SYN opens a session with another ISN, so d1's
    late copies of its own segments (ack = the old ISN + 1) cannot drive it to MORPH."""
    pair = new_pair()
    pair.run()
    old_iss = sent(pair, "d2", "SYN/ACK")[0].seq
    acts = pair.listener.on_segment(sent(pair, "d1", "SYN")[0], pair.now)
    phantom = pair.listener.sessions[D1]
    assert sends(acts) == ["SYN/ACK"] and phantom.iss != old_iss
    for _, seg in pair.wire:
        if sender(seg) == "d1" and kind(seg) != "SYN":
            pair.listener.on_segment(seg, pair.now)
    assert phantom.state is S.SYN_RCVD
    assert pair.first.on_segment(acts[-1].segment, pair.now) == []  # d1 is done: ignores it


def test_window_and_go_back_n_and_the_rst_after_it():
    """d1 respects d2's window; after going back N its RST still lands in d2's window."""
    first, listener = established()
    second = listener.sessions[D1]
    data = [a for a in first.handoff(STATE, UPDATE, 0.0) if isinstance(a, Send)]
    for a in data:  # d2 gets every byte, its ACKs are lost ...
        listener.on_segment(a.segment, 0.0)
    assert second.rcv_nxt == (first.iss + 1 + len(STATE)) % 2**32
    # ... but an old one (1460 bytes, window 1000) arrives
    first.on_segment(dataclasses.replace(from_d2(first, ACK, ack=first.snd_una + 1460),
                                         window=1000), 0.01)
    acts = first.on_timer(first.next_deadline())
    assert [len(a.segment.payload) for a in acts if isinstance(a, Send)] == [1000]
    assert first.next_deadline() == pytest.approx(0.01 + RTO + 2 * RTO)
    acts = listener.on_segment(first.resume(0.5)[1].segment, 0.5)
    assert outcome_of(acts, D1) == [Outcome.ABORTED]


def test_second_checks_syn_and_rst_numbers():
    listener = TchListener(*D2)
    acts = listener.on_segment(syn(seq=7), 0.0)
    second = listener.sessions[D1]
    assert sends(acts) == ["SYN/ACK"] and second.state is S.SYN_RCVD
    assert sends(listener.on_segment(syn(seq=7), 0.1)) == ["SYN/ACK"]  # lost SYN/ACK
    assert listener.on_segment(syn(seq=8), 0.1) == []  # not the same connection
    assert listener.on_segment(dataclasses.replace(syn(seq=7), flags=SYN | ACK), 0.1) == []
    rst = from_d1(second, RST)
    assert listener.on_segment(dataclasses.replace(rst, seq=second.rcv_nxt - 1), 0.1) == []
    assert listener.on_segment(dataclasses.replace(rst, seq=second.rcv_nxt + T.WINDOW + 1),
                               0.1) == []
    acts = listener.on_segment(dataclasses.replace(rst, seq=second.rcv_nxt + 100), 0.1)
    assert outcome_of(acts, D1) == [Outcome.ABORTED] and not listener.sessions
    assert sends(acts) == []  # never a RST for a RST


def test_illegal_calls_raise_and_change_nothing():
    first = TchFirst(D1, D2, CLIENT, isn=1)
    for call in (lambda: first.handoff(b"", UPDATE, 0.0), lambda: first.switch_updated(0.0),
                 lambda: first.resume(0.0), lambda: first.client_closed(0.0)):
        with pytest.raises(TchProtocolError):
            call()
    assert first.state is F.IDLE
    first.open(0.0)
    with pytest.raises(TchProtocolError, match="handoff\\(\\) while SYN_SENT"):
        first.handoff(b"", UPDATE, 0.0)  # check 11: no handoff during setup
    with pytest.raises(TchProtocolError):
        first.open(0.0)
    first, listener = established()
    with pytest.raises(TchProtocolError, match="switch_updated\\(\\) while ESTABLISHED"):
        first.switch_updated(0.0)
    with pytest.raises(TchProtocolError):
        listener.restored(D1, 0.0)  # no SET yet
    with pytest.raises(TchProtocolError, match="no TCH session"):
        listener.restored(("10.0.0.13", 1), 0.0)
    assert issubclass(TchProtocolError, ProtocolError)
    assert first.state is F.ESTABLISHED and listener.sessions[D1].state is S.ESTABLISHED
    pair = new_pair()
    pair.run()
    for call in (pair.first.resume, pair.first.client_closed):  # after END: too late
        with pytest.raises(TchProtocolError):
            call(pair.now)


def test_transition_tables():
    for table, states_, events in ((FIRST_TRANSITIONS, FirstState, T.FirstEvent),
                                   (SECOND_TRANSITIONS, SecondState, T.SecondEvent)):
        assert all(isinstance(s, states_) and isinstance(e, events) and isinstance(n, states_)
                   for (s, e), n in table.items())
        closed = states_.CLOSED
        assert all(n is closed for (s, _), n in table.items() if s is closed)
        assert {n for n in table.values()} | {list(states_)[0]} == set(states_)


# --- random loss, duplication, reordering ------------------------------------------------

CHAOS = settings(max_examples=300, deadline=None)


@CHAOS
@given(st.data(), st.binary(max_size=9000), st.tuples(st.integers(0, 2**32 - 1),
                                                        st.integers(0, 2**32 - 1)))
def test_bounded_chaos_always_hands_off(data, state, update):
    """At most max_retries losses, duplicates, delays below RTO/4: always handed off."""
    losses = [0]

    def net(seg):
        copies = data.draw(st.integers(0 if losses[0] < RETRIES else 1, 2), label="copies")
        losses[0] += copies == 0
        return [(data.draw(st.floats(0.0, RTO / 4), label="delay"), seg) for _ in range(copies)]

    pair = new_pair(state, update, net)
    pair.run(until=1000)
    first, seconds = outcomes(pair)
    assert first is Outcome.HANDED_OFF
    # later sessions, if any, are old duplicate SYNs: they never establish
    assert seconds[0] is Outcome.HANDED_OFF and set(seconds[1:]) <= {Outcome.ABORTED}
    assert [(r.update, r.state) for r in of(pair, Restore)] == [(update, state)]
    assert len(of(pair, Morph)) == 1 and not pair.listener.sessions


@CHAOS
@given(st.data(), st.integers(0, 60))
def test_unbounded_chaos_ends_cleanly(data, chaotic):
    """Any loss, duplication and reordering (delays up to 2 RTO) of the first ``chaotic``
    segments: no exception, both ends finish, at most one MORPH, never both serving."""
    count = [0]

    def net(seg):
        count[0] += 1
        if count[0] > chaotic:
            return [(0.001, seg)]
        copies = data.draw(st.integers(0, 3), label="copies")
        return [(data.draw(st.floats(0.0, 2 * RTO), label="delay"), seg) for _ in range(copies)]

    pair = new_pair(net=net)
    pair.run(until=10_000)
    first, seconds = outcomes(pair)
    assert first is not None and not pair.listener.sessions
    morphs = len(of(pair, Morph))
    assert morphs <= 1 and seconds.count(Outcome.HANDED_OFF) == morphs
    assert set(seconds) <= {Outcome.HANDED_OFF, Outcome.ABORTED}
    if morphs:  # d1 never resumes a session d2 serves
        assert first is Outcome.HANDED_OFF


SEQ = st.integers(0, 2**32 - 1)
FUZZ = settings(max_examples=1000, deadline=None)


@st.composite
def stray_segments(draw, near: list[int]):
    """Arbitrary segments between d1 and d2, their numbers often near the live ones."""
    num = st.sampled_from(near).flatmap(lambda n: st.integers(-2, 2).map(
        lambda d: (n + d) % 2**32)) | SEQ
    return Segment(
        D1[0], D2[0], draw(st.sampled_from([D1[1], 1])), draw(st.sampled_from([D2[1], 81])),
        draw(num), draw(num), draw(st.integers(0, 0x1FF)), draw(st.integers(0, 7)),
        draw(st.integers(0, 0xFFFF)), draw(st.none() | st.tuples(st.integers(0, 0xFFFF),
                                                                  st.just(CLIENT[0]))),
        draw(st.none() | st.tuples(SEQ, SEQ)), draw(st.binary(max_size=40)))


@FUZZ
@given(st.data(), st.integers(0, 3))
def test_arbitrary_segments_never_raise(data, stage):
    """Feeding the listener (and the first, mirrored) arbitrary segments at any stage."""
    first, listener = TchFirst(D1, D2, CLIENT, isn=500), TchListener(*D2)
    acts = first.open(0.0)
    if stage >= 1:
        deliver(first, listener, acts, 0.0)
    if stage >= 2:
        deliver(first, listener, first.handoff(b"abc", UPDATE, 0.0), 0.0)
    if stage >= 3:
        deliver(first, listener, listener.restored(D1, 0.0), 0.0)
    near = [first.iss, first.snd_nxt, first.rcv_nxt, first.rcv_nxt - 1, 0]
    now, acts = 0.0, []
    for seg in data.draw(st.lists(stray_segments(near), max_size=12)):
        now += 0.05
        mirrored = dataclasses.replace(seg, src=seg.dst, dst=seg.src, sport=seg.dport,
                                       dport=seg.sport)
        acts += listener.on_segment(seg, now) + first.on_segment(mirrored, now)
        acts += listener.on_timer(now) + first.on_timer(now)
    assert all(isinstance(a, T.Action) for a in acts)
    assert len(of_kind(acts, Morph)) <= 1
