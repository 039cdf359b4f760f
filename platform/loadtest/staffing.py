"""How Locust shares its virtual users among the workloads and how many it starts in time,
known before a test starts.

Locust gives each workload (one user class each) users in proportion to its weight, dealing
them one at a time: the next user goes to the class whose share of users falls furthest short
of its share of the weight (measured as Kullback-Leibler divergence), a tie going to the class
whose name sorts first. With fewer users than the weights need, the lightest workloads get
none and send nothing, and a load test's verdict then says nothing about them. Importing
Locust would monkey-patch this process with gevent, so the rule is restated here; a test
holds it to the installed Locust's own dispatcher.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.loadtest.workload import WorkloadFile, user_class_name


def _deal_order(weights: dict[str, int]) -> Iterator[str]:
    """Workload names in the order Locust starts their users, without end."""
    # Locust's heap entries, with the workload's name last: (how far the class's share would
    # move towards its weight's, negated; weight + users dealt + 1; weight; class name). The
    # same expression and order keep ties (equal weights) resolving as Locust resolves them.
    heap = [
        (w * math.log2(w / (w + 1.0)), w + 1.0, w, user_class_name(name), name)
        for name, w in weights.items()
        if w > 0
    ]
    heapq.heapify(heap)
    while heap:
        _, after, w, cls, name = heap[0]
        yield name
        heapq.heapreplace(heap, (w * math.log2(after / (after + 1.0)), after + 1.0, w, cls, name))


def deal(weights: dict[str, int], users: int) -> dict[str, int]:
    """Users per workload once Locust has started `users` of them (weights 0 left out)."""
    dealt = {name: 0 for name, w in weights.items() if w > 0}
    for name in itertools.islice(_deal_order(weights), users):
        dealt[name] += 1
    return dealt


@dataclass(frozen=True)
class Staffing:
    """Which workloads a test with `users` peak users runs, and what it takes to run them all."""

    users: int
    unstaffed: list[str]
    users_for_all: int

    def warning(self) -> str | None:
        """One sentence for the person starting the test, or None when every workload runs."""
        if not self.unstaffed:
            return None
        return (
            f"at {self.users} users Locust gives no user to {', '.join(self.unstaffed)} (too "
            f"small a share of the weight), so the test will not cover "
            f"{'it' if len(self.unstaffed) == 1 else 'them'}; --users {self.users_for_all} "
            "runs every workload"
        )


def staffing(workload: WorkloadFile, users: int) -> Staffing:
    """The workloads of `workload` left without a user at a peak of `users` users."""
    first: dict[str, int] = {}  # the user count at which each workload gets its first
    for n, name in enumerate(_deal_order({w.name: w.weight for w in workload.workloads}), 1):
        first.setdefault(name, n)
        if len(first) == len(workload.active):
            break
    unstaffed = [w.name for w in workload.active if first[w.name] > users]
    return Staffing(users, unstaffed, max(first.values(), default=0))


def unstaffed_warning(workload: WorkloadFile, spec: ShapeSpec) -> str | None:
    """Why some workloads will get no user, or None: too few users for their weights, or too
    slow a spawn rate to start enough of them before the end (Locust starts the lightest
    workloads' users last)."""
    started = spec.most_users_started()
    at_peak = staffing(workload, spec.users)
    if started >= spec.users or at_peak.unstaffed:
        return at_peak.warning()
    short = staffing(workload, started)
    if not short.unstaffed:
        return None
    needed = spec.spawn_rate_to_start(at_peak.users_for_all)
    return (
        f"at --spawn-rate {spec.spawn_rate:g} a {spec.duration_s:g} s test starts at most "
        f"{started} of its {spec.users} users, and Locust starts those of "
        f"{', '.join(short.unstaffed)} last, so the test will not cover "
        f"{'it' if len(short.unstaffed) == 1 else 'them'}; --spawn-rate {needed:g} starts "
        f"{at_peak.users_for_all} users before the end, the last only just: a faster rate or a "
        "longer test gives them time to send"
    )
