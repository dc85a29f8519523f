"""knemu node_agent."""
