"""Standalone helper programs the daemon spawns (stdlib only, run with `python -I -S FILE`)."""
