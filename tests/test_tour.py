"""`ftsslab tour` (`./run demo`): its stops exist and validate; verdicts become exit codes."""

import json

import pytest
from typer.testing import CliRunner

from ftsslab import tour
from ftsslab.cli import app
from ftsslab.cli import lab as lab_cli
from ftsslab.cli import tour as tour_cli  # noqa: F401  (registers the command)
from ftsslab.lab.backend import BackendError
from ftsslab.lab.scenario import load_scenario
from tests.support import ftsslab

# `backend: sim` so that these run anywhere, root or not
PASSING = """
name: tour-passes
backend: sim
nodes: {h1: {kind: host}, h2: {kind: host}, s1: {kind: switch}}
links: ["h1:eth0 s1:p1", "h2:eth0 s1:p2"]
steps:
  - send:
      from: h1:eth0
      packet: 'Ether(dst="ff:ff:ff:ff:ff:ff")/IP(src="10.0.0.1", dst="10.0.0.2")/UDP(dport=7)'
expect:
  - received: {node: h2, match: 'UDP(dport=7)', count: 1}
"""
FAILING = PASSING.replace("tour-passes", "tour-fails").replace("count: 1", "count: 2")


def test_every_stop_names_a_scenario_file_that_validates():
    names = [s.name for s in tour.STOPS]
    assert len(set(names)) == len(names)
    scenarios = [s for s in tour.STOPS if s.scenario]
    assert scenarios[0].scenario == "scenarios/ftss-http-kill.yaml"  # the headline comes first
    for stop in scenarios:
        assert stop.path.is_file(), stop
        assert load_scenario(stop.path).steps, stop  # raises ScenarioErrors when invalid


def test_an_unknown_stop_is_one_line_and_exit_2(tmp_path):
    res = ftsslab("tour", "--only", "no-such-stop", cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1
    assert "no-such-stop" in res.stderr and "http-kill" in res.stderr  # names the real ones
    assert not (tmp_path / "captures").exists()  # nothing ran


@pytest.fixture
def stops(tmp_path, monkeypatch):
    """The tour's stop list replaced by sim scenarios: a passing and a failing one."""
    for name, text in (("passes", PASSING), ("fails", FAILING)):
        (tmp_path / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(tour, "STOPS", tuple(
        tour.Stop(name, f"claim {name}", f"intro {name}", str(tmp_path / f"{name}.yaml"))
        for name in ("passes", "fails")))
    monkeypatch.chdir(tmp_path)


def test_a_failing_stop_exits_1_and_the_tour_goes_on(stops):
    res = CliRunner().invoke(app, ["tour", "--json"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert not doc["passed"]
    assert [(r["stop"], r["verdict"]) for r in doc["stops"]] == [("passes", "pass"),
                                                                  ("fails", "fail")]
    assert doc["stops"][1]["failed"] == 1 and doc["stops"][1]["run"]["expectations"]


def test_a_broken_lab_exits_3_even_when_another_stop_failed(stops, monkeypatch):
    real = lab_cli.execute

    def breaks_once(scenario, *args, **kw):
        if scenario.name == "tour-passes":
            raise BackendError("namespace vanished")
        return real(scenario, *args, **kw)

    monkeypatch.setattr(lab_cli, "execute", breaks_once)
    res = CliRunner().invoke(app, ["tour"])
    assert res.exit_code == 3, res.output
    assert "lab error: namespace vanished" in res.output
    assert "lab broke" in res.output and "FAIL 1 of 1 expectations" in res.output


def test_only_keeps_the_tour_order(stops):
    res = CliRunner().invoke(app, ["tour", "--only", "fails", "--only", "passes"])
    assert res.exit_code == 1, res.output
    assert res.output.index("stop 1/2: passes") < res.output.index("stop 2/2: fails")
    assert "intro passes." in res.output and "shows: claim fails" in res.output


@pytest.mark.root
def test_the_quickest_real_stop_through_the_cli(tmp_path):
    res = ftsslab("tour", "--only", "switch-learning", cwd=tmp_path)
    assert res.returncode == 0, (res.stdout, res.stderr)
    out = res.stdout
    assert "stop 1/1: switch-learning" in out and "forwards only to the port it learned" in out
    assert "all expectations passed; capture: captures/switch-learning.pcapng" in out  # run's
    assert "report: captures/switch-learning.html" in " ".join(out.split())
    summary = out[out.index("ftsslab tour: 1 stop,"):]
    assert "switch-learning │ pass" in summary and "every stop passed (1 of 1)" in summary
    assert (tmp_path / "captures" / "switch-learning.pcapng").stat().st_size > 0
    assert 'class="arrow"' in (tmp_path / "captures" / "switch-learning.html").read_text()


@pytest.mark.tshark
def test_the_packet_stop_in_json(tmp_path):
    res = ftsslab("tour", "--only", "packets", "--json", cwd=tmp_path)
    assert res.returncode == 0, (res.stdout, res.stderr)
    doc = json.loads(res.stdout)  # demo's own tables stay out of the JSON
    assert doc["passed"] and [r["stop"] for r in doc["stops"]] == ["packets"]
    assert (tmp_path / doc["stops"][0]["capture"]).stat().st_size > 0
    assert doc["stops"][0]["report"] == "captures/demo.html"
    assert 'class="arrow"' in (tmp_path / "captures" / "demo.html").read_text()
