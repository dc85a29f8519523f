"""knemu: an emulator of a Kubernetes cluster's network."""

__version__ = "0.1.0"
