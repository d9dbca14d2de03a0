"""FTSS system: the durable store (write cache + RAID) and the node cores built on it."""
