"""What a failed load reports: ``ScenarioError`` per problem, ``ScenarioErrors`` for them all.

``Collector`` gathers them while the loader goes on, so one run reports every problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from yaml.nodes import Node

MAX_ERRORS = 200             # beyond this, one "too many errors" line


@dataclass(frozen=True)
class ScenarioError:
    path: str            # YAML path: "steps[3].send.packet" ("" for the file as a whole)
    line: int | None     # 1-based
    message: str
    hint: str = ""
    file: str = ""

    def __str__(self) -> str:
        """One line: ``file:line: path: message (hint: ...)``."""
        out = self.file or "<string>"
        if self.line:
            out += f":{self.line}"
        out += ": "
        if self.path:
            out += f"{self.path}: "
        out += self.message
        if self.hint:
            out += f" (hint: {self.hint})"
        return " ".join(out.splitlines())

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "path": self.path,
                "message": self.message, "hint": self.hint}


class ScenarioErrors(Exception):
    """Everything wrong with one scenario file, in line order; ``str()`` is one line each."""

    def __init__(self, errors: Iterable[ScenarioError]):
        self.errors: list[ScenarioError] = sorted(errors, key=lambda e: e.line or 0)
        super().__init__("\n".join(str(e) for e in self.errors))

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def line(node: Node | None) -> int | None:
    """The 1-based line a YAML node starts on."""
    return node.start_mark.line + 1 if node is not None else None


class Collector:
    """The errors found so far in one file; ``where`` is a YAML node or a line number."""

    def __init__(self, file: str):
        self.file = file
        self.errors: list[ScenarioError] = []

    def err(self, path: str, where: Node | int | None, message: str, hint: str = "") -> None:
        at = where if isinstance(where, int) or where is None else line(where)
        self.errors.append(ScenarioError(path, at, message, hint, self.file))

    def report(self) -> list[ScenarioError]:
        """The errors, cut at ``MAX_ERRORS`` with one line saying how many more there are."""
        if len(self.errors) <= MAX_ERRORS:
            return self.errors
        extra = len(self.errors) - MAX_ERRORS
        return self.errors[:MAX_ERRORS] + [ScenarioError(
            "", None, f"{extra} more errors not shown", "fix the ones above first", self.file)]
