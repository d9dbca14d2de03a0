"""The running lab a command names (``--lab``), without rich: ``replay`` needs it and races
tcpreplay."""

from __future__ import annotations

from typing import Annotated

import typer

from . import UserError

LabOpt = Annotated[str | None, typer.Option("--lab", help="Lab id (see `ftsslab lab ls`).")]


def lab_state(lab_id: str | None):
    """The state record of the lab named, or of the only running one; UserError otherwise."""
    from ..lab.veth.state import list_labs, load

    if lab_id is None:
        labs = [s for s in list_labs() if s.alive()]
        if len(labs) != 1:
            ids = ", ".join(s.lab_id for s in labs) or "none"
            raise UserError(f"{len(labs)} labs are running ({ids}): name one with --lab")
        return labs[0]
    state = load(lab_id)
    if state is None:
        raise UserError(f"no lab {lab_id!r} (see `ftsslab lab ls`)")
    return state
