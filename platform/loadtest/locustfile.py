"""The locustfile the runner starts Locust with (`gemma-fleet loadtest`). Its settings come from
the environment (gemma_fleet.loadtest.settings); loadtest/locustfile.py is the same for users
running plain `locust -f`."""

from gemma_fleet.loadtest.users import locust_classes

globals().update(locust_classes())
