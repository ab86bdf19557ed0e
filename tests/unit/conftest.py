"""Unit tests: hypothesis without an example database (nothing written to the tree) or deadlines."""

from hypothesis import settings

settings.register_profile("lxdtx-unit", database=None, deadline=None)
settings.load_profile("lxdtx-unit")
