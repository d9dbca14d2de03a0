"""Importing ``ftsslab.layers`` leaves Scapy alone for packets that use none of its formats.

Two worker processes (``scapy_worker.py``), stock Scapy and Scapy with ``ftsslab.layers``
imported, build and dissect the same hypothesis-drawn Ether / IP (with options) / IPv6 /
TCP (every option kind of Scapy's table, unknown kinds, lists over 40 bytes, raw option
areas) / UDP / RoCE (BTH with Scapy's AETH, CNPPadding, GRH) packets; the layers, repr,
bytes, dissected fields, summary and rebuilt bytes, or the exception raised, must be equal.

Never drawn, because they are ftsslab's formats (docs/protocols.md, "What importing
ftsslab.layers changes in Scapy"): TCP option kinds 254 and 255 and kind 253 with ExID
0x5841, IP option number 30, UDP ports 5016, 4494, 4497 and 49122, Ethertype 0x8906, and the BTH
opcodes after which ftsslab binds a header where Scapy binds none.  So that Scapy cannot
read one of those out of random bytes, random bytes hold no 253-255 and no byte that is IP
option number 30, payloads never follow a tunnel port or protocol, and IP ``ihl`` is left
to Scapy (a wrong one makes it read the next header as IP options).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.fast.cluster import CLUSTER_UDP_PORT
from ftsslab.fast.fc import FCOE_ETHERTYPE
from ftsslab.fast.i2o import I2O_UDP_PORT
from ftsslab.fast.roce import HEADER_CHAINS, ROCEV2_UDP_PORT
from ftsslab.fast.tch import TCH_ENDPOINT_KIND, TCH_UDP_PORT, TCH_UPDATE_KIND
from ftsslab.fast.xap import XAP_IP_OPTION_NUMBER, XAP_TCP_EXID, XAP_TCP_OPTION_KIND, XAP_UDP_PORT

WORKER = Path(__file__).with_name("scapy_worker.py")
FTSSLAB_TCP_KINDS = {XAP_TCP_OPTION_KIND, TCH_ENDPOINT_KIND, TCH_UPDATE_KIND}
FTSSLAB_PORTS = {XAP_UDP_PORT, TCH_UDP_PORT, CLUSTER_UDP_PORT, I2O_UDP_PORT, ROCEV2_UDP_PORT}
TUNNEL_PORTS = {1701, 4754, 4789, 4790, 6633, 8472, 48879}  # L2TP, GRE, VXLAN: inner frames
XAP_EXID = XAP_TCP_EXID.to_bytes(2, "big")
# Bytes Scapy could read as an option of ftsslab's kinds if it met them where an option starts.
SAFE_BYTES = bytes(b for b in range(253) if b & 0x1F != XAP_IP_OPTION_NUMBER)


class Worker:
    """One worker process: a description in, its result out, one JSON line each."""

    def __init__(self, *args: str, log: Path):
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=WORKER.parent)
        self.tables = self.read()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"worker died; see {self.log.name}"
        return json.loads(line)

    def send(self, desc: list) -> None:
        self.proc.stdin.write(json.dumps(desc) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def workers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("scapy-workers")
    stock = Worker(log=logs / "stock.log")
    ftsslab = Worker("--ftsslab", log=logs / "ftsslab.log")
    assert stock.tables["ftsslab"] == [], "the stock worker must not import ftsslab"
    assert "ftsslab.layers" in ftsslab.tables["ftsslab"]

    def both(desc: list) -> tuple[dict, dict]:
        stock.send(desc)
        ftsslab.send(desc)
        return stock.read(), ftsslab.read()

    yield SimpleNamespace(run=both, packets=packets(SimpleNamespace(**stock.tables)))
    stock.close()
    ftsslab.close()


# ---------------------------------------------------------------- strategies
def u(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << bits) - 1)


def blob(min_size: int = 0, max_size: int = 24) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda b: bytes(SAFE_BYTES[x % len(SAFE_BYTES)] for x in b))


def hexed(strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[dict]:
    return strategy.map(lambda b: {"b": b.hex()})


def fields(required: dict | None = None, **optional: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries(required or {}, optional=optional)


MAC = st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"])
IP4 = st.sampled_from(["192.0.2.1", "198.51.100.2", "10.0.0.1", "0.0.0.0"])
IP6 = st.sampled_from(["2001:db8::1", "fe80::2", "::1", "ff02::1"])
# IP protocols / IPv6 next headers without an inner header: unassigned, or opaque to Scapy
OPAQUE_PROTO = st.integers(143, 252) | st.sampled_from([2, 50, 59, 112, 132])
_STRUCT_ITEM = re.compile(r"!?([bBhHiIlLqQfdpP]|\d+[spx])")  # as Scapy's RandTCPOptions
_SIZES = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 4, "L": 4, "q": 8, "Q": 8}


def _struct_value(fmt: str) -> st.SearchStrategy:
    """A value Scapy packs with ``fmt``: an int, a list of them, or bytes for 's'/'p'."""
    items = _STRUCT_ITEM.findall(fmt)
    if not items:  # SAck: "!" + one "I" per value
        return st.lists(u(32), max_size=5)
    parts = [hexed(blob(0, 20)) if item[-1] in "sp" else u(8 * _SIZES[item]) for item in items]
    return parts[0] if len(parts) == 1 else st.tuples(*parts).map(list)


def _known_option(kind: int, name: str, fmt: str | None) -> st.SearchStrategy[list]:
    values = [st.none(), hexed(blob(0, 16)), u(16)]  # the wrong type raises or is skipped alike
    if fmt:
        values.insert(0, _struct_value(fmt))
    return st.tuples(st.sampled_from([name, kind]), st.one_of(values)).map(list)


def tcp_options(t) -> st.SearchStrategy[list]:
    """Option lists of Scapy's kinds (by name or number), unknown kinds and names, up to
    well over the 40 bytes a TCP header holds."""
    known = [(int(k), name, fmt) for k, (name, fmt) in t.tcp_options.items()]
    unknown = st.integers(2, 255).filter(
        lambda k: str(k) not in t.tcp_options and k not in FTSSLAB_TCP_KINDS)
    option = st.one_of(
        st.sampled_from(known).flatmap(lambda k: _known_option(*k)),
        st.tuples(unknown, hexed(blob(0, 16))).map(list),
        st.tuples(st.just(XAP_TCP_OPTION_KIND),  # another experiment's kind 253
                  hexed(blob(0, 16).filter(lambda b: b[:2] != XAP_EXID))).map(list),
        st.tuples(st.just("Bogus"), hexed(blob(0, 4))).map(list),
    )
    return (st.lists(option, max_size=6) | st.lists(option, min_size=8, max_size=16)
            | st.builds(lambda s: {"random": s}, u(32)))


def raw_tcp(t) -> st.SearchStrategy[bytes]:
    """A TCP header as bytes, with an option area of any kinds and lengths, right or wrong."""
    kind = st.sampled_from(sorted(int(k) for k in t.tcp_options)) | st.integers(2, 252)
    chunk = st.tuples(kind, blob(0, 12), st.none() | u(8)).map(
        lambda c: bytes([c[0], len(c[1]) + 2 if c[2] is None else c[2] % 253]) + c[1])
    return st.builds(
        lambda head, dataofs, opts, payload: head[:12] + bytes(
            [(dataofs if dataofs is not None else min(15, 5 + (len(opts) + 3) // 4)) << 4
             | head[12] & 0x0F]) + head[13:] + opts + payload,
        st.binary(min_size=20, max_size=20), st.none() | u(4),
        st.lists(chunk, max_size=8).map(b"".join), blob())


def ip_options(t) -> st.SearchStrategy[list]:
    registered = sorted(c for n, c in t.ip_options.items() if int(n) != XAP_IP_OPTION_NUMBER)
    raw = st.tuples(u(8).filter(lambda b: b & 0x1F != XAP_IP_OPTION_NUMBER and b < 253),
                    blob(0, 10)).map(lambda o: {"raw": (bytes([o[0], len(o[1]) + 2]) + o[1]).hex()})
    return st.lists(st.sampled_from(registered).map(lambda c: {"cls": c}) | raw, max_size=5)


def _ip(t, proto: bool) -> st.SearchStrategy[list]:
    opt = dict(tos=u(8), len=u(16), id=u(16), flags=u(3), frag=u(13), ttl=u(8), chksum=u(16))
    if proto:
        opt["proto"] = OPAQUE_PROTO
    return _layer("IP", fields({"src": IP4, "dst": IP4}, options=ip_options(t), **opt))


def _ip6(proto: bool) -> st.SearchStrategy[list]:
    opt = dict(tc=u(8), fl=u(20), plen=u(16), hlim=u(8))
    if proto:
        opt["nh"] = OPAQUE_PROTO
    return st.tuples(st.just("IPv6"), fields({"src": IP6, "dst": IP6}, **opt)).map(list)


def _layer(name: str, strategy: st.SearchStrategy) -> st.SearchStrategy[list]:
    return st.tuples(st.just(name), strategy).map(list)


def _raw(strategy: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[list]:
    return _layer("Raw", fields({"load": hexed(blob(1, 40) if strategy is None else strategy)}))


def _roce(t) -> st.SearchStrategy[list]:
    """BTH with Scapy's own headers after it, any opcode but those where ftsslab binds one."""
    opcodes = [c for c in range(256) if not (HEADER_CHAINS.get(c) and c not in t.bth_opcodes)]
    bth = dict(solicited=u(1), migreq=u(1), padcount=u(2), version=u(4), pkey=u(16), fecn=u(1),
               becn=u(1), resv6=u(6), dqpn=u(24), ackreq=u(1), resv7=u(7), psn=u(24),
               icrc=u(32))
    headed = st.tuples(  # AETH / CNPPadding set the opcode when it is left unset (top-down)
        _layer("BTH", fields(**bth, opcode=st.sampled_from(opcodes))),
        st.sampled_from([
            ["AETH", fields(syndrome=u(8), msn=u(24))],
            ["CNPPadding", fields(reserved1=u(64), reserved2=u(64))],
        ]).flatmap(lambda h: _layer(h[0], h[1])),
        st.lists(_raw(), max_size=1),
    ).map(lambda x: [x[0], x[1], *x[2]])
    bare = st.tuples(_layer("BTH", fields({"opcode": st.sampled_from(opcodes)}, **bth)),
                     _raw()).map(list)
    alone = _layer("BTH", fields(**bth, opcode=st.sampled_from(opcodes))).map(lambda b: [b])
    return headed | bare | alone


def _udp(t, roce: bool) -> st.SearchStrategy[list]:
    port = u(16).filter(lambda p: p not in FTSSLAB_PORTS | TUNNEL_PORTS | set(t.udp_ports)) \
        | st.sampled_from([53, 69, 123, 161, 520])
    if roce:  # unset sport is Scapy's 53 (DNS first), unset dport the top-down 4791
        return _layer("UDP", fields(sport=port, dport=st.just(ROCEV2_UDP_PORT), len=u(16),
                                    chksum=u(16)))
    return _layer("UDP", fields(sport=port, dport=port, len=u(16), chksum=u(16)))


def _tcp(t) -> st.SearchStrategy[list]:
    return _layer("TCP", fields(
        sport=u(16), dport=u(16), seq=u(32), ack=u(32), dataofs=u(4), reserved=u(3),
        flags=u(9), window=u(16), chksum=u(16), urgptr=u(16), options=tcp_options(t)))


def _transport(t, network: str) -> st.SearchStrategy[list]:
    """What follows an IP or IPv6 header, with the header itself in front."""
    ip = (lambda proto: _ip(t, proto)) if network == "IP" else _ip6
    return st.one_of(
        st.tuples(ip(False), _tcp(t), st.lists(_raw(), max_size=1))
        .map(lambda x: [x[0], x[1], *x[2]]),
        st.tuples(ip(False), _udp(t, False), st.lists(_raw(), max_size=1))
        .map(lambda x: [x[0], x[1], *x[2]]),
        st.tuples(ip(False), _udp(t, True), _roce(t)).map(lambda x: [x[0], x[1], *x[2]]),
        st.tuples(ip(True).map(_with_proto(network, 6)), _raw(raw_tcp(t))).map(list),
        st.tuples(ip(True), st.lists(_raw(), max_size=1)).map(lambda x: [x[0], *x[1]]),
    )


def _with_proto(network: str, proto: int):
    def set_proto(layer: list) -> list:
        return [layer[0], {**layer[1], "proto" if network == "IP" else "nh": proto}]
    return set_proto


def packets(t) -> st.SearchStrategy[list]:
    ether = fields({"dst": MAC, "src": MAC})
    opaque_type = u(16).filter(
        lambda x: x >= 0x600 and x not in set(t.ether_types) | {FCOE_ETHERTYPE}) \
        | st.sampled_from([0x0806, 0x888E, 0x88CC])
    l3 = _transport(t, "IP") | _transport(t, "IPv6")
    over_ether = st.one_of(
        st.tuples(_layer("Ether", ether), l3).map(lambda x: [x[0], *x[1]]),
        st.tuples(_layer("Ether", ether),  # Ether()/GRH(): Scapy's type 0x8915, then BTH
                  _layer("GRH", fields(ipver=u(4), tclass=u(8), flowlabel=u(20), paylen=u(16),
                                       nexthdr=u(8), hoplmt=u(8), sgid=u(128), dgid=u(128))),
                  _roce(t)).map(lambda x: [x[0], x[1], *x[2]]),
        st.tuples(_layer("Ether", fields({"dst": MAC, "src": MAC, "type": opaque_type})),
                  _raw()).map(list),
    )
    return over_ether | l3


# ---------------------------------------------------------------- tests
SCAPY_OVERSIZED = [  # Scapy's own test "TCP options: build oversized packet" (inet.uts)
    ["IP", {"src": "192.0.2.1", "dst": "192.0.2.2"}],
    ["TCP", {"options": [["TFO", [1607681672, 2269173587]], ["AltChkSum", [81, 27688]],
                         ["TFO", [253281879, 1218258937]], ["Timestamp", [1613741359, 4215831072]],
                         ["Timestamp", [3856332598, 1434258666]]]}],
]
_ETHER = ["Ether", {"dst": "02:00:00:00:00:02", "src": "02:00:00:00:00:01"}]
_IP = ["IP", {"src": "192.0.2.1", "dst": "192.0.2.2"}]


@pytest.mark.parametrize("desc", [
    SCAPY_OVERSIZED,
    [["TCP", {"options": {"random": 0x2813}}]],  # Scapy's "TCP random options - MD5 (#GH3777)"
    [_IP, ["TCP", {"options": [[XAP_TCP_OPTION_KIND, {"b": "1234abcd"}]]}]],  # other experiment
    [_ETHER, _IP, ["UDP", {}], ["BTH", {}]],  # top-down UDP/BTH: dport 4791, Scapy's sport
    [_ETHER, _IP, ["UDP", {"sport": 49152}], ["BTH", {}], ["AETH", {}]],  # Scapy's opcode
    [_ETHER, _IP, ["UDP", {"sport": 49152}], ["BTH", {"opcode": 0x51}], ["AETH", {}],
     ["Raw", {"load": {"b": "00000000"}}]],  # RD ACKNOWLEDGE read as Scapy reads it
], ids=["oversized-options", "random-options", "kind-253", "udp-bth", "bth-aeth", "rd-ack"])
def test_scapy_cases(workers, desc):
    stock, with_ftsslab = workers.run(desc)
    assert with_ftsslab == stock


@given(data=st.data())
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_same_packets_with_and_without_ftsslab(workers, data):
    desc = data.draw(workers.packets, label="description")
    stock, with_ftsslab = workers.run(desc)
    assert with_ftsslab == stock
