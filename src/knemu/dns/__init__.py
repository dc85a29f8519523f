"""knemu dns."""
