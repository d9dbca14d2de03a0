"""The HTML report against the DOM contract the browser test counts, without a browser: the
page is parsed with the stdlib's html.parser and its elements counted by class."""

import json
import re
from html.parser import HTMLParser

from ftsslab.report.model import (
    Conversation,
    Exchange,
    Frame,
    Layer,
    LinkLine,
    Moment,
    NodeBox,
    Report,
    Topology,
)
from ftsslab.report.render import render

EVIL = "</script><script>alert(1)</script>"


def frame(n: int, src: str, dst: str, summary: str, step: str = "", note: str = "") -> Frame:
    return Frame(number=n, time=n / 1000 + 0.5, src=src, dst=dst, where="h1:eth0 -> s1:p1",
                 summary=summary, length=60 + n, step=step, note=note,
                 layers=(Layer("Ether", (("dst", "02:00:00:00:00:02"), ("type", "0x800"))),
                         Layer("Raw", (("load", f"b'{EVIL}'"),))),
                 data=bytes(range(40)) + EVIL.encode())


def sample() -> Report:
    """2 hosts and a switch, 2 links, a failed verdict, 3 exchanges (the second folded twice,
    the third with a self-frame and a frame from outside its lanes)."""
    frames = {
        1: frame(1, "h1", "s1", "ARP who has 10.0.0.2", step="ping"),
        2: frame(2, "s1", "h2", "ARP who has 10.0.0.2", step="ping"),
        3: frame(3, "h2", "h1", "ARP is at 02:00:00:00:00:02", step="ping"),
        4: frame(4, "h1", "h2", "TCP 4000 > 80 S", step="get"),
        7: frame(7, "h2", "h1", EVIL, step="get"),
        10: frame(10, "h1", "h2", "TCP 4000 > 80 F" + "A" * 300, step="get", note="lost"),
        11: frame(11, "s1", "s1", "<!--<script> switch talks to itself", step="kill"),
        12: frame(12, "h9", "h1", "from outside the lanes", step="kill"),
    }
    return Report(
        title=f"demo {EVIL}",
        source="captures/demo.pcapng",
        backend="sim",
        passed=False,
        total_frames=200,
        dissected_frames=150,
        folds=["frames 151-200 counted, not dissected", "4 frames folded in exchange 2"],
        topology=Topology(
            nodes=(NodeBox("h1", "host"), NodeBox("s1", "switch"), NodeBox("h2", "host")),
            links=(LinkLine("h1:eth0", "s1:p1", mtu=1500, frames=6, bytes=900),
                   LinkLine("s1:p2", "h2:eth0", impair="a->b: loss 1%", frames=5, bytes=700)),
            drawn_from="scenario"),
        timeline=[
            Moment(None, "verdict", "h2 got the file", passed=False, detail=EVIL),
            Moment(0.0, "step", "ping"),
            Moment(1.25, "event", "kill", node="s1"),
            Moment(0.5, "step", "get"),
            Moment(2.0, "verdict", "h1 pinged h2", passed=True),
        ],
        exchanges=[
            Exchange(1, "arp", "who has 10.0.0.2", ("h1", "s1", "h2"), (1, 2, 3), (1, 2, 3),
                     ("ping",)),
            Exchange(2, "tcp", "h1:4000 <-> h2:80", ("h1", "h2"), (4, 5, 6, 7, 8, 9, 10),
                     (4, 7, 10), ("get",)),
            Exchange(3, "ftss", EVIL, ("h1", "s1"), (11, 12), (11, 12), ("kill",)),
        ],
        frames=frames,
        undissected=[Conversation("IPv4 10.0.0.1 <-> 10.0.0.2 UDP 53/5353", 50, 4000, 3.0, 4.5)],
    )


class Dom(HTMLParser):
    """Every start tag as (tag, attrs), and the text of each <script> by id."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: dict[str, str] = {}
        self._script: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "script":
            self._script = a.get("id", "")
            self.scripts[self._script] = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self.scripts[self._script] += data

    def find(self, tag: str, cls: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags
                if t == tag and (not cls or cls in a.get("class", "").split())
                and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def sections(html: str) -> dict[str, Dom]:
    """Each exchange's section, parsed on its own (to count what lies inside it)."""
    parts = re.split(r'(?=<section class="exchange")', html)[1:]
    return {Dom(p).find("section", "exchange")[0]["data-exchange"]: Dom(p.split("</section>")[0])
            for p in parts}


def test_topology_nodes_and_links():
    dom = Dom(render(sample()))
    (topo,) = dom.find("svg", "topology")
    assert [(a["data-node"], a["data-kind"]) for a in dom.find("g", "node")] == [
        ("h1", "host"), ("s1", "switch"), ("h2", "host")]
    assert [(a["data-link"], a["data-frames"], a["data-bytes"]) for a in dom.find("g", "link")] == [
        ("h1:eth0 s1:p1", "6", "900"), ("s1:p2 h2:eth0", "5", "700")]
    assert len(dom.find("line", "impaired")) == 1
    assert len(dom.find("text", "iface")) == 4


def test_exchanges_lanes_arrows_and_folds():
    html = render(sample())
    dom = Dom(html)
    got = [(a["id"], a["data-family"], a["data-frames"], a["data-drawn"], a["data-folded"])
           for a in dom.find("section", "exchange")]
    assert got == [("exchange-1", "arp", "3", "3", "0"), ("exchange-2", "tcp", "7", "3", "4"),
                   ("exchange-3", "ftss", "2", "2", "0")]
    each = sections(html)
    assert [len(each[n].find("g", "arrow")) for n in "123"] == [3, 3, 2]
    assert [len(each[n].find("g", "lane")) for n in "123"] == [3, 2, 2]
    assert [len(each[n].find("svg", "ladder")) for n in "123"] == [1, 1, 1]
    # 5, 6 between 4 and 7; 8, 9 between 7 and 10
    assert [a["data-folded"] for a in each["2"].find("g", "fold")] == ["2", "2"]
    assert each["1"].find("g", "fold") == [] and each["3"].find("g", "fold") == []
    assert [(a["data-frame"], a["data-src"], a["data-dst"]) for a in each["3"].find("g", "arrow")
            ] == [("11", "s1", "s1"), ("12", "h9", "h1")]
    assert [a["data-lane"] for a in each["3"].find("g", "extra-lane")] == ["h9"]
    assert len(dom.find("a", "", href="#exchange-2")) == 2  # the index links to it


def test_a_fold_before_the_first_and_after_the_last_drawn_frame():
    r = sample()
    r.exchanges = [Exchange(1, "tcp", "t", ("h1", "h2"), (3, 4, 7, 10, 11), (4, 7))]
    dom = Dom(render(r))
    assert [a["data-folded"] for a in dom.find("g", "fold")] == ["1", "2"]


def test_timeline_in_order_with_verdicts_at_the_end():
    html = render(sample())
    dom = Dom(html)
    classes = [a["class"] for a in dom.find("li", "moment")]
    assert classes == ["moment step", "moment step", "moment event", "moment verdict pass",
                       "moment verdict fail"]
    (ol,) = dom.find("ol", "timeline")
    assert "1.250 s" in html and "at end" in html


def test_header_says_verdict_counts_and_folds():
    html = render(sample())
    assert '<span class="badge failed">failed</span>' in html
    assert "200 captured, 150 dissected" in html
    assert "frames 151-200 counted, not dissected" in html
    assert len(Dom(html).find("aside", "", id="frame-panel")) == 1


def test_data_is_escaped_and_the_frames_blob_parses_back():
    html = render(sample())
    dom = Dom(html)
    assert [(t, a.get("id")) for t, a in dom.tags if t == "script"] == [
        ("script", "frames"), ("script", None)]
    assert html.count("</script>") == 2
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html
    assert "<" not in dom.scripts["frames"]  # not even "<!--<script>", which bends "</"
    blob = json.loads(dom.scripts["frames"])
    assert sorted(blob, key=int) == ["1", "2", "3", "4", "7", "10", "11", "12"]
    assert blob["11"]["summary"].startswith("<!--<script>")
    f7 = blob["7"]
    assert f7["summary"] == EVIL and f7["src"] == "h2"
    assert f7["layers"][1] == ["Raw", [["load", f"b'{EVIL}'"]]]
    assert bytes.fromhex(f7["hex"]) == bytes(range(40)) + EVIL.encode()


def test_long_labels_are_clipped_with_the_full_text_in_the_tooltip():
    html = render(sample())
    assert "TCP 4000 &gt; 80 F" + "A" * 300 in html  # the <title>
    assert re.search(r'class="alabel">TCP 4000 &gt; 80 FA{5,}…  \[lost\]</text>', html)


def test_no_network_resources():
    html = render(sample())
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "@import" not in html


def test_an_empty_report_renders():
    html = render(Report(title="empty", source="x.pcap", topology=Topology((), (), "capture")))
    dom = Dom(html)
    assert len(dom.find("svg", "topology")) == 1
    assert dom.find("g", "node") == [] and dom.find("section", "exchange") == []
    assert json.loads(dom.scripts["frames"]) == {}
    assert '<span class="badge none">no verdict</span>' in html


def test_many_nodes_of_a_foreign_capture_are_all_drawn():
    nodes = tuple(NodeBox(f"10.0.0.{i}") for i in range(50))
    links = tuple(LinkLine(f"10.0.0.{i}", f"10.0.0.{i + 1}", frames=i) for i in range(49))
    html = render(Report(title="big", source="x.pcap", topology=Topology(nodes, links, "capture")))
    dom = Dom(html)
    assert len(dom.find("g", "node")) == 50 and len(dom.find("g", "link")) == 49
    assert {a["data-kind"] for a in dom.find("g", "node")} == {""}


def test_a_link_to_an_undeclared_node_gets_a_stand_in_box():
    topo = Topology((NodeBox("h1", "host"), NodeBox("s1", "switch")),
                    (LinkLine("h1:eth0", "s1:p1"), LinkLine("s1:p2", "ghost:eth0", frames=2)),
                    "scenario")
    dom = Dom(render(Report(title="t", source="x.pcap", topology=topo)))
    assert [a["data-node"] for a in dom.find("g", "node")] == ["h1", "s1"]
    assert [a["data-node"] for a in dom.find("g", "phantom")] == ["ghost"]
    assert len(dom.find("g", "link")) == 2


def test_verdicts_box_lists_failures_first_and_the_timeline_still_holds_every_moment():
    html = render(sample())
    dom = Dom(html)
    (box,) = dom.find("div", "verdicts")
    assert "bad" in box["class"].split()
    assert [a["class"] for a in dom.find("li", "")
            if a.get("class") in ("vok", "vbad", "vunk")] == ["vbad", "vok"]
    assert len(dom.find("li", "moment")) == 5  # the box's rows are not moments
    assert len(dom.find("div", "timeline-wrap")) == 1


def test_parallel_links_are_drawn_apart_with_their_own_labels():
    topo = Topology((NodeBox("srv1", "server"), NodeBox("ftss", "ftss")),
                    (LinkLine("srv1:fa", "ftss:a1", frames=3), LinkLine("srv1:fb", "ftss:b1")),
                    "scenario")
    html = render(Report(title="t", source="x.pcap", topology=topo))
    lines = re.findall(r'<line x1="([\d.-]+)" y1="([\d.-]+)" x2="([\d.-]+)" y2="([\d.-]+)"', html)
    assert len(lines) == 2 and lines[0] != lines[1]
    assert len(Dom(html).find("text", "iface")) == 4


def test_the_index_closes_past_twelve_exchanges():
    base = sample()
    many = [Exchange(i, "arp", f"x{i}", ("h1", "s1"), (1,), (1,), ()) for i in range(1, 14)]
    closed = render(Report(title="t", source="x.pcap", topology=base.topology,
                           exchanges=many, frames=base.frames))
    assert '<details class="index">' in closed
    assert '<details class="index" open>' in render(sample())
