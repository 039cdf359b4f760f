"""Gemma Fleet load test for plain Locust (`gemma-fleet loadtest` runs the same users, then
writes the SLO report). Configure it through the environment:

    GEMMA_FLEET_API_KEY=<team key> \
    GEMMA_FLEET_LOADTEST_WORKLOAD=loadtest/workloads/mix.yaml \
    GEMMA_FLEET_LOADTEST_SHAPE=step GEMMA_FLEET_LOADTEST_DURATION=5m GEMMA_FLEET_LOADTEST_USERS=20 \
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Without GEMMA_FLEET_LOADTEST_SHAPE, Locust's own -u/-r/-t (or its web UI) set the load. See
docs/loadtest.md for every variable.
"""

from gemma_fleet.loadtest.users import locust_classes

globals().update(locust_classes())
