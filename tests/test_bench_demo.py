"""The benchmark and the demo run, and say something true."""

from pathlib import Path

import pytest

from ftsslab import demo
from tests.support import load_bench

ROOT = Path(__file__).resolve().parents[1]


def test_fast_parsers_handle_every_reference_frame_the_bench_feeds_them():
    rows = {r["family"]: r for r in load_bench("parse_speed").run(seconds=0.001)}
    assert set(rows) == {"fc", "ftss", "xap", "tch", "roce", "i2o"}
    for row in rows.values():  # the 802.1Q-tagged FCoE reference frame included
        assert row["fast_unparsed"] == 0, row


def test_the_cores_bench_carries_every_frame_it_feeds_the_cores():
    """200 data frames from app1 and an ACK-sized frame from app2 per two: all 300 reach the
    other application's stack, through unit, FTSS and unit, each a figure of CPU."""
    got = load_bench("ftss_cores").drive(200, 16)
    assert got["carried"] == 300 and got["us_per_frame"] > 0


@pytest.mark.root
def test_replay_bench_runs_the_whole_commands_and_cleans_up():
    """A small run (without tcpreplay if it is missing): every command sends or merges every
    frame (the bench checks the counts each reports) and h2 receives them all; the suite
    checks that no lab is left behind."""
    bench = load_bench("replay")
    res = bench.bench(1500, 1, {"": ROOT}, skip_missing=True)
    rows = res["commands"]
    assert {"replay: ftsslab", "merge: ftsslab"} <= set(rows)
    assert rows["replay: ftsslab"]["delivered"] == 1.0
    assert all(r["seconds"]["min"] > 0 and r["pps"] > 0 for r in rows.values())


@pytest.mark.tshark
def test_demo_writes_a_capture_that_tshark_accepts(tmp_path, capsys):
    assert demo.main(tmp_path) == 0
    assert (tmp_path / "demo.pcapng").stat().st_size > 0
    out = capsys.readouterr().out
    assert "STORED_GUARANTEED" in out
    assert "what tshark" in out and out.count("good") == 2  # tshark checked both FC CRCs


@pytest.mark.root
def test_impair_bench_measures_through_the_shim_and_cleans_up():
    """A short run: frames cross the shim, its CPU time is read, tbf holds the rate; the
    suite checks that no lab is left behind."""
    bench = load_bench("impair")
    fwd = bench.forwarding(bench.Impairment(), 0.2, capture=True)
    assert fwd["recv_pps"] > 0 and fwd["shim_us_per_frame"] > 0
    assert 5 < bench.rate(10**7, 0.5)["measured_mbit"] <= 10.3
