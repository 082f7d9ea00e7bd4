"""Peer implementations of the scenarios (imported only inside worker processes)."""
