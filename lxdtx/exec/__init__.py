"""Exec and console sessions: the command's process, its websockets, recording."""
