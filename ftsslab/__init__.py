"""ftsslab: a Scapy-based protocol lab for the FTSS, switched-NAS, RKey and I2O seed systems."""

__version__ = "0.1.0"
