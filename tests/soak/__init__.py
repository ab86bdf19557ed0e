"""Soak tests: long runs of one daemon under parallel load (only with LXDTX_SOAK=1)."""
