"""Object metadata helpers shared by every layer (as Kubernetes' apimachinery): names and
timestamps (``naming``), label selectors (``labels``)."""
