"""The systems ftsslab realizes, in one place: importing each module registers its node
kinds (``ftsslab.lab.kinds.register_kind``). The engine imports this list on its first
kind lookup and never names a system itself; a new system adds one line here."""

import ftsslab.ftss.kinds  # noqa: F401  -- seed 000/004: `ftss`, `server`
import ftsslab.i2o.kinds  # noqa: F401  -- seed 001: `i2o-host`, `i2o-remote`
import ftsslab.lab.builtin  # noqa: F401  -- the lab's own `host`, `switch`
import ftsslab.nas.kinds  # noqa: F401  -- seed 002: `nas-switch`, `nas`
import ftsslab.san.kinds  # noqa: F401  -- seed 003: `sanic`
