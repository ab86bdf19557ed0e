"""Declarative key schemas: one per object type (server, container, devices, network, pool, volume)."""
