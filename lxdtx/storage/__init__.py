"""Storage: pools and volumes, one driver module per backend, a backend layer that rolls back."""
