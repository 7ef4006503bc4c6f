"""HomeSync: the pure library behind the integration (wire format, availability, commands).

Nothing in this package imports Home Assistant (tests/test_library_boundary.py enforces it), so
it can be read, tested and reused on its own, the way `hatasmota` stands beside HA's `tasmota`.
See docs/architecture.md.
"""
