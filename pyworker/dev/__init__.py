"""Development tools: a stand-in model server (and, later, a local autoscaler)."""
