"""HTTP API routers (one per resource) and their shared dependencies."""
