"""The FTSS scenarios on real namespaces: unmodified programs, a real store, real SIGKILL."""

from pathlib import Path

import pytest

from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario

from ..lab.test_veth import _netns_works

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not _netns_works(), reason="needs root and namespaces")]


@pytest.mark.parametrize("name", ["ftss-http-kill", "ftss-guaranteed", "ftss-undeliverable"])
def test_scenario_passes_on_veth(name):
    from ftsslab.lab.veth.backend import VethBackend

    result = Runner(load_scenario(ROOT / "scenarios" / f"{name}.yaml"), VethBackend()).run()
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]
