"""The craft expression language accepts layer calls with literals and refuses everything else."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.config import conf
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from ftsslab.expr import ExprError, parse_packet, parse_pattern


def test_stack_with_literals_builds_and_freezes():
    pkt = parse_packet(
        'Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")'
        '/IP(src="10.9.0.1", dst="10.9.0.2", ttl=7)/UDP(sport=1, dport=2)/b"hi"'
    )
    assert pkt[IP].ttl == 7 and pkt[UDP].len == 10 and pkt[Raw].load == b"hi"
    assert pkt[IP].chksum is not None  # frozen: computed fields are values now


def test_containers_signs_and_bitor():
    pkt = parse_packet(
        'IP(src="10.9.0.1", dst="10.9.0.2", flags=1|2)/TCP(options=[("MSS", 1460),'
        ' ("NOP", None), ("WScale", +7)], window=+100)/"text"'
    )
    assert pkt[TCP].options[0] == ("MSS", 1460)
    assert pkt[IP].flags == 3 and pkt[TCP].window == 100


def test_craft_helpers_are_callable():
    pkt = parse_packet('IP(src="10.9.0.1", dst="10.9.0.2")/TCP(reserved=tch("HND", "SET"),'
                       ' options=tch_options(endpoint=(40000, "10.9.0.1"), update=(1, 2)))')
    kinds = [o[0] for o in pkt[TCP].options]
    assert pkt[TCP].reserved != 0
    assert kinds[:4] == ["TCHEndpoint", "NOP", "NOP", "TCHUpdate"]


def test_unset_ether_dst_is_broadcast_without_any_arp(monkeypatch):
    asked = []  # a resolver that would send ARP: it must never be consulted
    monkeypatch.setattr(conf.neighbor, "resolvers",
                        {(Ether, IP): lambda l2, l3: asked.append(l3.dst) or "02:00:00:00:00:99"})
    pkt = parse_packet('Ether()/IP(src="10.9.0.1", dst="10.9.0.2")')
    assert pkt[Ether].dst == "ff:ff:ff:ff:ff:ff"
    assert asked == []


@pytest.mark.parametrize("pattern, hit", [
    ('IP(dst="10.9.0.2")/UDP(dport=7)/b"ell"', True),   # layers need not be adjacent
    ('Ether()/UDP()', True),
    ('UDP()/IP()', False),                              # order matters
    ('TCP()', False),                                   # a missing layer
    ('UDP(dport=8)', False),                            # a wrong field
    ('UDP()/b"nope"', False),                           # payload containment
])
def test_patterns_match_layers_in_order(pattern, hit):
    pkt = parse_packet('Ether()/IP(src="10.9.0.1", dst="10.9.0.2")/UDP(dport=7)/b"hello"')
    assert parse_pattern(pattern).matches(pkt) is hit


@pytest.mark.parametrize(
    "expr, message",
    [
        ('__import__("os").system("id")', "only plain layer names"),
        ("IP().__class__", "Attribute is not allowed"),
        ("os", "bare name 'os'"),
        ("IP", "did you mean IP()?"),
        ("open('/etc/passwd')", "unknown layer 'open'"),
        ("(lambda: 1)()", "only plain layer names"),
        ("[IP() for x in [1]][0]", "Subscript is not allowed"),
        ("IP(**{'ttl': 1})", "'**kwargs' is not allowed"),
        ("IP(*[1])", "'*args' is not allowed"),
        ("IP(ttl=f'{1}')", "JoinedStr is not allowed"),
        ("IP(ttl=(x:=1))", "NamedExpr is not allowed"),
        ("IP(ttl=1+1)", "BinOp is not allowed"),
        ("IP(tll=1)", "IP has no field 'tll'"),
        ("IP(ttl=300)", "ubyte format requires"),
        ("IP()/[1]", "is not a packet layer"),
        ("IP(", "syntax error"),
        ("IP(ttl=1j)", "literal 1j is not allowed"),
        ("IP(ttl=-'a')", "a sign goes only before a number"),
    ],
)
def test_refused_with_clear_message(expr, message):
    with pytest.raises(ExprError, match=None) as info:
        parse_packet(expr)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@settings(max_examples=500, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("IPUDTCEther()/=\"'0123456789,. _x[]{}:+-|*lambd")),
        max_size=60,
    )
)
def test_arbitrary_text_is_built_or_refused_never_crashes(text):
    try:
        pkt = parse_packet(text)
    except ExprError:
        return
    assert bytes(pkt)
