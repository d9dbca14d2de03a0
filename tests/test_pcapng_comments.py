"""Packet comments read back as written, through the reader's fast path (one comment per
block, as ftsslab's captures have) and its careful one (none, or several), also from a
damaged file."""

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


@settings(max_examples=300, deadline=None)
@given(frames, st.data())
def test_a_damaged_capture_reads_back_every_frame_before_the_damage(packets, data):
    """One byte changed or the file cut anywhere: the reader raises nothing, every frame it
    gives is inside the file, and each frame whose block ends before the damage is read back
    as written (with its comments) -- the fast path's end checks (a bad trailing length pops
    the last block) agree with the careful path."""
    buf = io.BytesIO()
    w = PcapNgWriter(buf)
    iface = Interface("a:eth0")
    w.interface(iface)
    ends = []
    for i, (frame, comments) in enumerate(packets):
        w.packet(iface, frame, 10**9 + i, comments)
        ends.append(buf.tell())
    raw = bytearray(buf.getvalue())
    at = data.draw(st.integers(0, len(raw) - 1))
    if data.draw(st.booleans()):
        raw[at] ^= data.draw(st.integers(1, 255))
    else:
        del raw[at:]
    cap, _ = read_capture(bytes(raw))
    assert all(o + n <= len(raw) for o, n in zip(cap.offsets, cap.lengths, strict=True))
    intact = sum(end <= at for end in ends)
    assert len(cap) >= intact
    for i in range(intact):
        frame, comments = packets[i]
        assert bytes(cap.data[cap.offsets[i]:cap.offsets[i] + cap.lengths[i]]) == frame
        assert cap.comments.get(i, []) == comments
