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
    assert parse_pattern(pattern).count(pkt) == int(hit)


@pytest.mark.parametrize("more", [0, 1, 6])
def test_a_match_counts_the_messages_its_last_layer_answers(more):
    """An FTSS ACK answering ``more + 1`` PKTs counts that many; a layer below it, once."""
    pkt = parse_packet(f'Ether()/FCoE()/FC(type=0xE0)/FTSS()/FTSSAck(msg_id=9, more={more})')
    assert parse_pattern('FTSSAck(status="STORED_GUARANTEED")').count(pkt) == more + 1
    assert parse_pattern('FTSS()').count(pkt) == 1
    assert parse_pattern('FTSSAck(status="DELIVERED")').count(pkt) == 0


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


def test_an_empty_packet_is_refused():
    """hypothesis found ``''``: a bare empty string built a packet of no bytes."""
    for text in ("''", 'b""'):
        with pytest.raises(ExprError, match="empty packet"):
            parse_packet(text)


@pytest.mark.parametrize("expr, message", [
    ("/".join(["UDP()"] * 2001), "2001 layers joined by '/'; at most 100"),
    ("/".join(["UDP()"] * 101), "101 layers"),
    ("/".join(["IP()"] * 20001), "too large or nested too deeply for the parser"),
    ("IP(ttl=" + "-" * 40 + "1)", "nested too deeply: more than 32 levels"),
    ("IP(ttl=" + "-" * 5000 + "1)", "too large or nested too deeply"),
    ("IP(flags=" + "|".join(["1"] * 5000) + ")", "nested too deeply"),
    ("IP()/(" * 40 + "UDP()" + ")" * 40, "nested too deeply"),
    ("/".join(["(UDP()/(UDP()/(UDP()/UDP())))"] * 30), "more than 100 layers"),
    ("TCP(options=[" + ",".join(["('NOP', None)"] * 40000) + "])", "more than 100000 syntax"),
    ('IP()/b"' + "x" * 1_000_001 + '"', "expression too long"),
])
def test_size_is_bounded_with_a_clear_message(expr, message):
    """No expression reaches the recursion limit: Scapy's or the builder's."""
    with pytest.raises(ExprError) as info:
        parse_packet(expr)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_largest_allowed_stack_builds():
    pkt = parse_packet("Ether()/" + "/".join(["IP()"] * 98) + '/b"end"')
    assert len(pkt.layers()) == 100 and bytes(pkt).endswith(b"end")


@pytest.fixture
def no_dns(monkeypatch):
    """Every name lookup is recorded (and fails): a test then asserts there was none."""
    import socket

    asked = []

    def lookup(*args, **kwargs):
        asked.append(args[0])
        raise socket.gaierror(socket.EAI_NONAME, "lookups are forbidden in this test")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        monkeypatch.setattr(socket, name, lookup)
    return asked


@pytest.mark.parametrize("expr", [
    'IP(dst="example.com")',
    'IP(src="example.com", dst="10.9.0.2")',
    'IP(dst=b"example.com")',
    'IP(dst="10.9.0.0/24")',                      # a network: Scapy resolves its base too
    'IP(dst=("10.9.0.1", "10.9.0.9"))',           # a range
    'IP(dst=["10.9.0.1", "example.com"])',
    'IP(dst="10.1")',                             # inet_aton shorthand is not literal
    'IPv6(dst="example.com")',
    'IPv6(src="example.com")',
    'IPv6(dst="::1")/IPv6ExtHdrRouting(addresses=["example.com"])',
    'ARP(pdst="example.com")',
    'Ether()/ARP(psrc="example.com")',
    'Ether(dst="example.com")',
    'FTSSHello(macs=["02:00:00:00:00:01", "example.com"])',
    'IP(src="10.9.0.1", dst="10.9.0.2")/UDP()/XAPUDP(messages=[XAP(cluster_id="example.com")])',
])
def test_host_names_are_refused_and_never_looked_up(no_dns, expr):
    with pytest.raises(ExprError) as info:
        parse_packet(expr)
    assert "addresses must be literal" in str(info.value)
    assert no_dns == []


def test_patterns_refuse_host_names_too(no_dns):
    """A pattern's values are converted when it matches: a name would be resolved then."""
    with pytest.raises(ExprError, match="addresses must be literal"):
        parse_pattern('IP(dst="example.com")/UDP(dport=7)')
    assert no_dns == []


def test_literal_addresses_resolve_nothing(no_dns):
    pkt = parse_packet('Ether(src="02:00:00:00:00:01", dst="2:0:0:0:0:2")'
                       '/IPv6(src="fe80::1", dst="fe80::2%lo")/UDP(dport=7)')
    assert pkt[Ether].dst == "02:00:00:00:00:02"
    pkt = parse_packet('Ether()/ARP(psrc="10.9.0.1", pdst="10.9.0.2", hwdst="02:00:00:00:00:02")')
    assert pkt.pdst == "10.9.0.2"
    pkt = parse_packet('IP(src="10.9.0.1", dst=["10.9.0.2", "10.9.0.3"])/UDP()')
    assert pkt[IP].dst == "10.9.0.2"
    assert parse_pattern('IP(dst="10.9.0.2")').matches(
        parse_packet('Ether()/IP(src="10.9.0.1", dst="10.9.0.2")'))
    assert no_dns == []
