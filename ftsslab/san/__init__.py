"""Seed 003: RKey memory management on a SAN (docs/san.md).

``memory`` is the node's memory as the seed describes it: per-process segment tables
(EA -> VA), an inverted page table (VA -> PA) and physical frames, run by a VMM stand-in.
``rkeys`` is the SANIC's remote keys: their life cycle, who may bind what, and the
responder's check of every RDMA before a byte moves. Both are sans-IO cores.
"""
