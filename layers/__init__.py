"""Scapy layers for every wire format of the four seed systems.

Importing this package registers every layer and binding with Scapy, so plain
dissection of bytes (``Ether(raw)``) finds them.
"""

from . import fc, ftss, i2o, roce, tch, xap  # noqa: F401  (import = register bindings)

MODULES = (fc, ftss, xap, tch, roce, i2o)
