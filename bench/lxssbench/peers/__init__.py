"""Peers measured for real: one module each, with setup, teardown and a reason.

Each peer is a context manager. Entering it sets the peer up (installing
nothing: packages come from ``install.py``) and raises ``Unavailable`` with
the exact reason when it cannot run here; leaving it removes everything it
created, whatever happened in between.
"""
