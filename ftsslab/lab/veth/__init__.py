"""The veth backend: real network namespaces, veth pairs, a bridge + nftables switch.

Kept import-light on purpose: ``python -m ftsslab.lab.veth.switchd`` runs one
control process per switch and must start fast. Use ``ftsslab.lab.veth.backend``
for ``VethBackend``.
"""
