"""The state store: JSON documents with revisions, changed in compare-and-swap transactions."""

from lxdtx.state.store import ABSENT, Delete, Document, Put, RevisionMismatch, Store  # noqa: F401
