"""Scenario files: YAML -> ``model.Scenario``, or ``ScenarioErrors`` listing every problem.

The file is only *composed* (``safe_yaml``): the loader walks the node tree itself, so
no YAML tag can construct anything and every value keeps its line. Every check runs
even after earlier ones failed, so one run reports all errors, each with its YAML path,
line and a hint. See docs/scenarios.md for the format.

``loader`` drives the parts in file order: ``nodes``, ``links``, ``steps`` (one loader
per action key) and ``expectations`` (one per key), all reading values through
``values``, ``names`` and ``refs`` and recording what they define in one ``Context``.
"""

from .errors import MAX_ERRORS, ScenarioError, ScenarioErrors
from .loader import load_scenario, load_scenario_text
from .safe_yaml import MAX_BYTES, MAX_DEPTH
from .values import MAX_COUNT, MAX_DURATION

__all__ = [
    "MAX_BYTES", "MAX_COUNT", "MAX_DEPTH", "MAX_DURATION", "MAX_ERRORS", "ScenarioError",
    "ScenarioErrors", "load_scenario", "load_scenario_text",
]
