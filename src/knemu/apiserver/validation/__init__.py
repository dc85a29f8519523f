"""Validation of objects, rejecting what Kubernetes rejects with Kubernetes' field paths:
shared helpers and small kinds in ``common``, one module per larger kind group."""
