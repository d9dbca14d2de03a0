"""A shipped scenario's report, opened in headless Chromium as a person would open it: the DOM
after the page's script ran holds a lane per node and an arrow per frame of each exchange, as
counted in the capture itself, and the screenshot is a drawn page.

``FTSSLAB_SCREENSHOT=docs/report.png pytest tests/report/test_browser.py`` keeps the screenshot
(the README's picture is made so)."""

from __future__ import annotations

import os
import shutil
import struct
from collections import defaultdict
from pathlib import Path

import pytest

from ftsslab.layers.ftss import FTSSAck, FTSSPacket
from ftsslab.pcapng import load_capture
from ftsslab.report import write_report

from . import browser
from .test_render import Dom, sections

pytestmark = pytest.mark.chromium
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """ftss-guaranteed run on the sim backend, its report written and opened in Chromium."""
    from ftsslab.lab.capture import write_capture
    from ftsslab.lab.runner import Runner
    from ftsslab.lab.scenario import load_scenario
    from ftsslab.lab.sim import SimBackend

    tmp = tmp_path_factory.mktemp("browser")
    sc = load_scenario(REPO / "scenarios" / "ftss-guaranteed.yaml")
    result = Runner(sc, SimBackend()).run()
    cap, html = tmp / "captures" / "ftss-guaranteed.pcapng", tmp / "report.html"
    write_capture(cap, sc, result.frames, result.events, "sim")
    here = os.getcwd()
    os.chdir(tmp)  # the report names its capture as `ftsslab run` there would
    try:
        model = write_report(cap.relative_to(tmp), html, result)
    finally:
        os.chdir(here)
    return cap, html, model, browser.dump_dom(html)


def test_the_page_script_ran(opened):
    *_, dom = opened
    assert 'data-ready="1"' in dom


def test_every_ftss_message_has_one_arrow_per_frame_of_it_in_the_capture(opened):
    """The oracle is the capture: the frames carrying each message id, counted with Scapy, and
    the nodes their comments name."""
    cap, _, model, dom = opened
    frames_of, lanes_of = defaultdict(int), defaultdict(set)
    for p in load_capture(cap).packets():
        for cls in (FTSSPacket, FTSSAck):
            if cls in p.pkt:
                ends = p.comments[0].split(" [")[0].split(" -> ")
                frames_of[p.pkt[cls].msg_id] += 1
                lanes_of[p.pkt[cls].msg_id] |= {e.split(":")[0] for e in ends}
    drawn = sections(dom)
    messages = {e.number: int(e.title.split()[2].rstrip(":"), 16) for e in model.exchanges
                if e.title.startswith("FTSS message")}
    assert sorted(messages.values()) == sorted(frames_of) and len(frames_of) >= 5
    for number, msg_id in messages.items():
        part = drawn[str(number)]
        arrows = part.find("g", "arrow")
        lanes = {a["data-lane"] for a in part.find("g", "lane")}
        assert len(arrows) == frames_of[msg_id] == 4
        assert lanes == lanes_of[msg_id]
        assert all({a["data-src"], a["data-dst"]} <= lanes for a in arrows)


def test_topology_and_timeline_are_the_runs(opened):
    _, _, model, dom = opened
    page = Dom(dom)
    assert [a["data-node"] for a in page.find("g", "node")] == [n.name for n in
                                                                 model.topology.nodes]
    assert {a["data-link"]: int(a["data-frames"]) for a in page.find("g", "link")} == {
        ln.name: ln.frames for ln in model.topology.links}
    assert len(page.find("li", "moment")) == len(model.timeline)
    assert len(page.find("li", "verdict")) == len(page.find("li", "pass")) >= 5


def test_the_screenshot_is_a_drawn_page(opened, tmp_path):
    _, html, _, _ = opened
    png = browser.screenshot(html, tmp_path / "report.png", width=1280, height=1600)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 1600)
    assert len(data) > 60_000  # a blank page of this size compresses to a few kB
    if keep := os.environ.get("FTSSLAB_SCREENSHOT"):
        shutil.copyfile(png, keep)


def test_clicking_an_arrow_shows_that_frames_fields_and_bytes(opened, tmp_path):
    """A real click event, dispatched in the page, goes through the page's own handler; the
    panel then holds the frame's layers and a hex dump of its bytes as the capture has them."""
    cap, html, model, _ = opened
    message = next(e for e in model.exchanges if e.title.startswith("FTSS message"))
    number = message.frames[1]  # the STORED ack
    clicked = tmp_path / "clicked.html"
    click = (f"<script>document.querySelector('g.arrow[data-frame=\"{number}\"]')"
             ".dispatchEvent(new MouseEvent('click', {bubbles: true}));</script></body>")
    clicked.write_text(html.read_text().replace("</body>", click))
    panel = browser.dump_dom(clicked).split('<aside id="frame-panel"', 1)[1].split("</aside>")[0]
    data = list(load_capture(cap).packets())[number - 1].data
    assert f"Frame #{number}" in panel
    for layer in ("Ethernet", "FTSS", "FTSS Acknowledgment"):
        assert f"<summary>{layer}</summary>" in panel
    first = " ".join(f"{b:02x}" for b in data[:8]) + "  " + " ".join(f"{b:02x}" for b in data[8:16])
    assert f"0000  {first}" in panel
    assert "STORED_GUARANTEED" in panel
