"""Packet comments read back as written, through the reader's fast path (one comment per
block, as ftsslab's captures have) and its careful one (none, or several)."""

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.pcapng import Interface, PcapNgWriter, read_capture

frames = st.lists(st.tuples(st.binary(min_size=14, max_size=70),
                            st.lists(st.text(max_size=40), max_size=3)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(frames, st.booleans())
def test_comments_and_bytes_read_back_as_written(packets, two_interfaces):
    buf = io.BytesIO()
    w = PcapNgWriter(buf)
    ifaces = [Interface("a:eth0", "link a:eth0 <-> b:eth0 (mtu 1500)"), Interface("c:eth0")]
    for iface in ifaces:
        w.interface(iface)
    for i, (data, comments) in enumerate(packets):
        w.packet(ifaces[i % 2 if two_interfaces else 0], data, 10**9 + i, comments)
    cap, damage = read_capture(buf.getvalue())
    assert damage is None and len(cap) == len(packets)
    for i, (data, comments) in enumerate(packets):
        at = cap.offsets[i]
        assert bytes(cap.data[at:at + cap.lengths[i]]) == data
        assert cap.comments.get(i, []) == comments
    assert cap.interfaces[0].description == "link a:eth0 <-> b:eth0 (mtu 1500)"


def test_the_section_headers_comments_are_kept():
    buf = io.BytesIO()
    PcapNgWriter(buf, comments=["ftsslab scenario x (x.yaml) on sim", "event t=0.1s n kill: -"])
    cap, _ = read_capture(buf.getvalue())
    assert cap.notes == ["ftsslab scenario x (x.yaml) on sim", "event t=0.1s n kill: -"]
