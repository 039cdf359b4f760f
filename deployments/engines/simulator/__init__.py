"""A GPU simulator that behaves like vLLM serving Gemma 4 on a named GPU, without one."""
