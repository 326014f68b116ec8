"""A worker for OpenAI-compatible LLM servers: vLLM, SGLang, llama.cpp's server, TGI (see README.md)."""
