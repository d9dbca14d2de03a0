"""Tests of the FTSS system."""
