"""One shipped scenario run on veth, asserted to pass: what several NAS tests read."""

from __future__ import annotations

from pathlib import Path

from ftsslab.lab.model import Scenario
from ftsslab.lab.runner import Runner, RunResult
from ftsslab.lab.scenario import load_scenario
from tests.support import why_failed

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def passing_run(name: str) -> tuple[Scenario, RunResult]:
    from ftsslab.lab.veth.backend import VethBackend

    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    result = Runner(scenario, VethBackend()).run()
    assert result.passed, why_failed(result)
    return scenario, result
