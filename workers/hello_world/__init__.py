"""A worker for an LLM server with `/generate` and `/generate_stream` (see README.md)."""
