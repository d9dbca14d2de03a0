# SPDX-License-Identifier: GPL-2.0-or-later
"""The heartbeat cores (seed 002 D2.12, checks 23-25): the reporter's schedule and bytes, a
walk of every row of the monitor's table through its real inputs, the rows it refuses,
silence on a virtual clock (bounded detection, no false DOWN under loss and jitter below the
threshold), chatter, restarts, stale datagrams and garbage."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.fast.cluster import (
    CLUSTER_DEGRADED,
    CLUSTER_OK,
    CLUSTER_PREDICTED_FAIL,
    CLUSTER_SWITCH,
    Status,
    build_cluster_status,
    parse_cluster_status,
)
from ftsslab.layers.cluster import ClusterStatus
from ftsslab.nas.health import (
    TRANSITIONS,
    Event,
    Health,
    HealthError,
    HealthMonitor,
    Load,
    Peer,
    PeerDegraded,
    PeerDown,
    PeerPredictedFail,
    PeerRestarted,
    PeerState,
    PeerUp,
    StatusReporter,
)

D1, D2, ADDR = "10.0.0.11", "10.0.0.12", "10.0.0.11"
INTERVAL, MISSES, LATENESS = 0.1, 3, 0.5
BOUND = (MISSES + LATENESS) * INTERVAL  # silence after the last heartbeat
CHATTER, WINDOW = 50, 0.95  # not a multiple of the interval: no sample on the window's edge
S, E = PeerState, Event
HEALTH_OF = {E.OK: CLUSTER_OK, E.DEGRADED: CLUSTER_DEGRADED,
             E.PREDICTED_FAIL: CLUSTER_PREDICTED_FAIL}


def hb(seq: int, *, health: int = CLUSTER_OK, errors: int = 0, boot: int = 1,
       peer: str = D1, interval_ms: int = 100) -> Status:
    return Status(sender_id=peer, boot=boot, seq=seq, health=health, errors=errors,
                  interval_ms=interval_ms, length=44)


def monitor(**kw) -> HealthMonitor:
    return HealthMonitor(misses=MISSES, lateness=LATENESS, chatter=CHATTER, window=WINDOW, **kw)


# -- the reporter ------------------------------------------------------------------------

def test_reporter_schedule_and_sequence():
    """First heartbeat at once, then on a fixed grid; a late driver skips slots, no burst."""
    rep = StatusReporter(D1, boot=7, now=5.0)
    load = Load(sessions=3, bytes_per_s=10**9, queue_depth=2, weight=4, errors=9)
    assert rep.next_deadline() == 5.0
    first = parse_cluster_status(rep.on_timer(5.0, load))
    assert (first.seq, first.boot, first.sender_id, first.interval_ms) == (0, 7, D1, 100)
    assert (first.sessions, first.bytes_per_s, first.queue_depth, first.weight, first.errors) == (
        3, 10**9, 2, 4, 9)
    assert rep.on_timer(5.05, load) is None
    assert rep.next_deadline() == pytest.approx(5.1)
    assert parse_cluster_status(rep.on_timer(5.1, load)).seq == 1
    assert parse_cluster_status(rep.on_timer(5.45, load)).seq == 2  # 5.2, 5.3, 5.4 are past
    assert rep.next_deadline() == pytest.approx(5.5)
    assert rep.on_timer(5.46, load) is None


def test_reporter_send_now_keeps_the_schedule():
    rep = StatusReporter(D1, boot=1, now=0.0)
    rep.on_timer(0.0, Load())
    extra = parse_cluster_status(rep.send_now(Load(health=Health.PREDICTED_FAIL)))
    assert (extra.seq, extra.health) == (1, CLUSTER_PREDICTED_FAIL)
    assert rep.next_deadline() == pytest.approx(0.1)


def test_reporter_bytes_are_the_scapy_layer():
    rep = StatusReporter("10.0.0.254", boot=0xB00, now=0.0, kind=CLUSTER_SWITCH, interval=0.25)
    data = rep.on_timer(0.0, Load(sessions=12, weight=2, health=Health.DEGRADED,
                                  errors=2**32 + 5))
    pkt = ClusterStatus(data)
    assert (pkt.sender_kind, pkt.sender_id, pkt.boot, pkt.interval_ms, pkt.health) == (
        CLUSTER_SWITCH, "10.0.0.254", 0xB00, 250, CLUSTER_DEGRADED)
    assert pkt.errors == 5  # cumulative, wraps at 2**32
    assert bytes(pkt) == data == build_cluster_status(parse_cluster_status(data))


def test_reporter_refuses_an_interval_the_field_cannot_hold():
    for interval in (0, 0.0004, 66.0):
        with pytest.raises(ValueError, match="1..65535 ms"):
            StatusReporter(D1, boot=1, now=0.0, interval=interval)


def test_a_restarted_reporter_is_a_restart_for_the_monitor():
    mon = monitor()
    old = StatusReporter(D1, boot=1, now=0.0)
    for t in (0.0, 0.1, 0.2):
        mon.on_datagram(old.on_timer(t, Load()), ADDR, t)
    new = StatusReporter(D1, boot=2, now=0.25)  # seq from 0 again, a new boot
    events = mon.on_datagram(new.on_timer(0.25, Load()), ADDR, 0.25)
    assert [type(e) for e in events] == [PeerRestarted, PeerUp]
    assert (events[0].old_boot, events[0].boot, events[0].last_seq) == (1, 2, 2)
    assert mon.peers[D1].counters["restarts"] == 1


# -- the table, row by row, through the monitor's inputs ------------------------------------

def reach(state: PeerState) -> tuple[HealthMonitor, float, int]:
    """A monitor whose peer D1 is in ``state``; returns it, the time and the last seq."""
    mon = monitor()
    if state is S.UNKNOWN:
        mon.expect(D1, 0.0)
        return mon, 0.0, -1
    health = {S.DEGRADED: CLUSTER_DEGRADED, S.PREDICTED_FAIL: CLUSTER_PREDICTED_FAIL}
    mon.on_status(hb(0, health=health.get(state, CLUSTER_OK)), ADDR, 0.0)
    if state is S.DOWN:
        mon.on_timer(mon.next_deadline())
        return mon, BOUND, 0
    return mon, 0.0, 0


def apply(mon: HealthMonitor, event: Event, t: float, seq: int) -> list:
    """Cause ``event`` by a real input: a heartbeat, a timer, an error spike, a new boot."""
    if event is E.SILENCE:
        return mon.on_timer(mon.next_deadline())
    now = t + INTERVAL
    if event is E.CHATTER:
        return mon.on_status(hb(seq + 1, errors=CHATTER + 1), ADDR, now)
    if event is E.RESTART:
        return mon.on_status(hb(0, boot=2), ADDR, now)
    return mon.on_status(hb(seq + 1, health=HEALTH_OF[event]), ADDR, now)


@pytest.mark.parametrize("row", sorted(TRANSITIONS, key=lambda r: (r[0].value, r[1].value)),
                         ids=lambda r: f"{r[0].name}-{r[1].name}")
def test_every_row(row):
    state, event = row
    mon, t, seq = reach(state)
    assert mon.state(D1) is state
    events = apply(mon, event, t, seq)
    new = TRANSITIONS[row]
    if event is E.RESTART:  # through UNKNOWN, then the heartbeat's own flag (OK)
        assert isinstance(events[0], PeerRestarted)
        assert (events[0].old, events[0].new) == (state, new)
        assert mon.state(D1) is S.UP and isinstance(events[1], PeerUp)
        return
    assert mon.state(D1) is new
    if new is state:  # a row that changes nothing says nothing
        assert events == []
        return
    (got,) = events
    assert (got.peer, got.old, got.new, got.event) == (D1, state, new, event)
    assert type(got) is {S.UP: PeerUp, S.DEGRADED: PeerDegraded,
                         S.PREDICTED_FAIL: PeerPredictedFail, S.DOWN: PeerDown}[new]


def test_the_rows_left_out_raise():
    """Chatter and restart need a heartbeat before; a DOWN peer has no silence deadline."""
    missing = {(s, e) for s in S for e in E} - set(TRANSITIONS)
    assert missing == {(S.UNKNOWN, E.CHATTER), (S.UNKNOWN, E.RESTART), (S.DOWN, E.SILENCE)}
    for state, event in missing:
        peer = Peer(D1, 0.0)
        peer.state = state
        with pytest.raises(HealthError, match=f"{event.value} while {state.name}"):
            peer.fire(event)
        assert peer.state is state


# -- silence on a virtual clock ----------------------------------------------------------------

def ticking(mon: HealthMonitor, arrivals: list[tuple[float, Status]], until: float,
            tick: float) -> list[tuple[float, object]]:
    """A driver that calls on_timer every ``tick`` and takes each heartbeat at its time."""
    out, pending = [], sorted(arrivals, key=lambda a: a[0])
    for k in range(int(until / tick) + 1):
        now = k * tick
        while pending and pending[0][0] <= now:
            at, status = pending.pop(0)
            out += [(at, e) for e in mon.on_status(status, ADDR, at)]
        out += [(now, e) for e in mon.on_timer(now)]
    return out


def exact(mon: HealthMonitor, arrivals: list[tuple[float, Status]]) -> list:
    """A driver that wakes exactly at next_deadline(), and for each heartbeat."""
    out, heap = [], list(arrivals)
    heapq.heapify(heap)
    while heap:
        deadline = mon.next_deadline()
        if deadline is not None and deadline <= heap[0][0]:
            out += mon.on_timer(deadline)
            continue
        at, status = heapq.heappop(heap)
        out += mon.on_status(status, ADDR, at)
    return out


@pytest.mark.parametrize("tick", [0.001, 0.01, 0.03, 0.1])
@pytest.mark.parametrize("lateness", [0.0, LATENESS])
def test_silence_is_detected_within_the_bound_plus_a_tick(tick, lateness):
    mon = HealthMonitor(misses=MISSES, lateness=lateness)
    stop = 1.0  # the last heartbeat
    arrivals = [(round(i * INTERVAL, 9), hb(i)) for i in range(11)]
    events = ticking(mon, arrivals, until=3.0, tick=tick)
    downs = [(t, e) for t, e in events if isinstance(e, PeerDown)]
    assert len(downs) == 1
    at, down = downs[0]
    bound = (MISSES + lateness) * INTERVAL
    assert down.event is E.SILENCE and down.last_seq == 10 and down.old is S.UP
    assert bound - 1e-9 <= down.detection_time <= bound + tick + 1e-9
    assert down.detection_time == pytest.approx(at - stop)
    assert mon.next_deadline() is None  # nothing more to do for a DOWN peer


def test_a_peer_that_stops_is_down_after_exactly_the_bound():
    mon = monitor()
    for i in range(5):
        mon.on_status(hb(i), ADDR, i * INTERVAL)
    last = 4 * INTERVAL
    assert mon.next_deadline() == pytest.approx(last + BOUND)
    assert mon.on_timer(last + BOUND - 1e-6) == []
    (down,) = mon.on_timer(mon.next_deadline())
    assert isinstance(down, PeerDown) and down.detection_time == pytest.approx(BOUND)
    assert mon.state(D1) is S.DOWN


def test_the_interval_is_the_senders():
    """A sender that announces 500 ms is silent after 3.5 x 500 ms, not 350 ms."""
    mon = monitor()
    mon.on_status(hb(0, interval_ms=500), ADDR, 0.0)
    assert mon.next_deadline() == pytest.approx(1.75)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 0.45 * INTERVAL)), min_size=1,
                max_size=80))
def test_loss_and_jitter_below_the_threshold_never_give_down(sends):
    """Up to misses - 1 heartbeats lost in a row, each one late by up to 0.45 interval."""
    lost = [False] + [lose for lose, _ in sends] + [False]  # the first and last arrive
    run = 0
    for i, lose in enumerate(lost):
        run = run + 1 if lose else 0
        if run >= MISSES:
            lost[i] = False
            run = 0
    jitter = [0.0] + [j for _, j in sends] + [0.0]
    arrivals = [(i * INTERVAL + jitter[i], hb(i)) for i, gone in enumerate(lost) if not gone]
    mon = monitor()
    events = exact(mon, arrivals)
    assert not any(isinstance(e, PeerDown) for e in events)
    assert mon.state(D1) is S.UP
    assert mon.peers[D1].counters["lost"] == sum(lost)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(MISSES, 10))
def test_misses_in_a_row_give_down_and_the_next_heartbeat_up(before, gone):
    arrivals = [(i * INTERVAL, hb(i)) for i in range(before)]
    back = before + gone
    arrivals.append((back * INTERVAL, hb(back)))
    mon = monitor()
    events = exact(mon, arrivals)
    kinds = [type(e) for e in events]
    assert kinds == [PeerUp, PeerDown, PeerUp]
    assert events[1].detection_time == pytest.approx(BOUND)
    assert (events[2].old, events[2].event) == (S.DOWN, E.OK)
    assert mon.peers[D1].counters["lost"] == gone


def test_an_expected_peer_never_heard_is_down():
    mon = monitor()
    mon.expect(D1, 2.0)
    mon.expect(D1, 9.0)  # already watched: unchanged
    (down,) = mon.on_timer(mon.next_deadline())
    assert (down.old, down.address, down.last_seq) == (S.UNKNOWN, None, None)
    assert down.detection_time == pytest.approx(BOUND) and down.at == pytest.approx(2 + BOUND)


def test_each_peer_has_its_own_deadline():
    mon = monitor()
    mon.on_status(hb(0, peer=D1), D1, 0.0)
    mon.on_status(hb(0, peer=D2), D2, 0.2)
    assert mon.next_deadline() == pytest.approx(BOUND)
    assert [e.peer for e in mon.on_timer(BOUND)] == [D1]
    assert mon.next_deadline() == pytest.approx(0.2 + BOUND)
    assert mon.state(D2) is S.UP and mon.state("10.9.9.9") is S.UNKNOWN


# -- health flags ---------------------------------------------------------------------------------

def test_flag_changes_are_events_and_repeats_are_not():
    mon = monitor()
    flags = [CLUSTER_OK, CLUSTER_OK, CLUSTER_DEGRADED, CLUSTER_DEGRADED, CLUSTER_PREDICTED_FAIL,
             CLUSTER_OK]
    events = []
    for i, flag in enumerate(flags):
        events += mon.on_status(hb(i, health=flag), ADDR, i * INTERVAL)
    assert [(type(e), e.old) for e in events] == [
        (PeerUp, S.UNKNOWN), (PeerDegraded, S.UP), (PeerPredictedFail, S.DEGRADED),
        (PeerUp, S.PREDICTED_FAIL)]
    assert events[2].status.seq == 4 and events[2].address == ADDR


# -- chatter -------------------------------------------------------------------------------------

def test_an_error_spike_is_down_until_the_window_is_quiet():
    mon = monitor()
    errors = [0, 0, 10, 30, 61, 80, 81, 81] + [81] * 12
    events = []
    for i, err in enumerate(errors):
        events += [(i, e) for e in mon.on_status(hb(i, errors=err), ADDR, i * INTERVAL)]
    (i_down, down), (i_up, up) = events[1:]
    assert i_down == 4 and isinstance(down, PeerDown) and down.event is E.CHATTER
    assert down.errors_rise == 61 and down.detection_time == pytest.approx(0.4)
    # the first heartbeat whose window (the last 10) rose by 50 or less: 81 - 61 at t = 1.3
    assert i_up == 13 and isinstance(up, PeerUp) and up.old is S.DOWN


def test_a_rise_at_the_threshold_or_spread_out_is_no_chatter():
    mon = monitor()
    mon.on_status(hb(0), ADDR, 0.0)
    assert mon.on_status(hb(1, errors=CHATTER), ADDR, 0.1) == []  # "more than" the threshold
    (down,) = mon.on_status(hb(2, errors=CHATTER + 1), ADDR, 0.2)
    assert down.errors_rise == CHATTER + 1
    mon = monitor()
    events = []
    for i in range(100):  # 5 errors per heartbeat: 45 within any window
        events += mon.on_status(hb(i, errors=5 * i), ADDR, i * INTERVAL)
    assert [type(e) for e in events] == [PeerUp]


def test_errors_wrap_without_a_spike():
    mon = monitor()
    mon.on_status(hb(0, errors=2**32 - 3), ADDR, 0.0)
    assert mon.on_status(hb(1, errors=4), ADDR, 0.1) == []  # a rise of 7
    assert mon.state(D1) is S.UP


def test_a_chattering_peer_that_falls_silent_stays_down():
    mon = monitor()
    mon.on_status(hb(0), ADDR, 0.0)
    mon.on_status(hb(1, errors=500), ADDR, 0.1)
    assert mon.state(D1) is S.DOWN and mon.next_deadline() is None
    assert mon.on_timer(100.0) == []


# -- restarts, stale datagrams, garbage ---------------------------------------------------------

def test_restart_of_a_down_peer():
    """kill -9 and a restart: silence, then a new boot."""
    mon = monitor()
    mon.on_status(hb(0), ADDR, 0.0)
    mon.on_timer(BOUND)
    events = mon.on_status(hb(0, boot=99, health=CLUSTER_DEGRADED), ADDR, 2.0)
    assert [(type(e), e.old, e.new) for e in events] == [
        (PeerRestarted, S.DOWN, S.UNKNOWN), (PeerDegraded, S.UNKNOWN, S.DEGRADED)]


def test_a_restart_forgets_the_error_count():
    mon = monitor()
    mon.on_status(hb(0, errors=1000), ADDR, 0.0)
    events = mon.on_status(hb(0, boot=2, errors=0), ADDR, 0.1)
    assert [type(e) for e in events] == [PeerRestarted, PeerUp]  # UP -> UNKNOWN -> UP
    assert mon.state(D1) is S.UP
    assert mon.on_status(hb(1, boot=2, errors=CHATTER), ADDR, 0.2) == []  # counted from 0


@pytest.mark.parametrize("seq", [5, 4, 0])
def test_seq_at_or_behind_the_last_is_stale_not_a_restart(seq):
    mon = monitor()
    mon.on_status(hb(5), ADDR, 0.0)
    assert mon.on_status(hb(seq, health=CLUSTER_PREDICTED_FAIL), ADDR, 0.05) == []
    assert mon.state(D1) is S.UP and mon.peers[D1].counters["stale"] == 1
    assert mon.peers[D1].last_heard == 0.0  # an old datagram is no sign of life


def test_seq_wraps_without_a_restart():
    mon = monitor()
    mon.on_status(hb(2**32 - 1), ADDR, 0.0)
    assert mon.on_status(hb(1), ADDR, 0.1) == []
    assert mon.peers[D1].counters == {"heartbeats": 2, "lost": 1}


def test_garbage_is_counted_and_dropped():
    mon = monitor()
    good = build_cluster_status(hb(0))
    for junk in (b"", b"GET /", good[:43], b"XX" + good[2:]):
        assert mon.on_datagram(junk, ADDR, 0.0) == []
    for bad in (hb(0)._replace(type=9), hb(0)._replace(sender_kind=0),
                hb(0)._replace(health=3), hb(0)._replace(interval_ms=0)):
        assert mon.on_status(bad, ADDR, 0.0) == []
    assert mon.counters == {"malformed": 4, "invalid": 4}
    assert mon.peers == {} and mon.next_deadline() is None


def test_monitor_refuses_nonsense_parameters():
    for kw in ({"misses": 0}, {"lateness": -1}, {"chatter": -1}, {"window": 0}):
        with pytest.raises(ValueError):
            HealthMonitor(**kw)
