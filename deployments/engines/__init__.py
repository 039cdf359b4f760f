"""Engines behind a pool: real vLLM and the GPU simulator, both as Ray Serve LLM engines."""
