"""Admission: what happens to an object between the request and the store (``pipeline``:
normalise, default, validate, allocate; ``defaults``: the fields Kubernetes fills in)."""
