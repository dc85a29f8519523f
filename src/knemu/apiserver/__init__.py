"""knemu apiserver."""
