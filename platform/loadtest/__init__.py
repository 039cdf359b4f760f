"""Load tests for a Gemma Fleet endpoint: workloads, load shapes, the Locust run and its report.

Nothing here imports Locust (it monkey-patches the process with gevent on import): only the
locustfile and `gemma_fleet.loadtest.users`, which run inside Locust's own process, do.
"""
