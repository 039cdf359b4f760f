"""Who gets a virtual user: the pre-run check agrees with the installed Locust's dispatcher, so
`gemma-fleet loadtest` can say before a test which workloads it would leave out."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.loadtest.staffing import deal, staffing
from gemma_fleet.loadtest.workload import load_workload, user_class_name

ROOT = Path(__file__).resolve().parents[2]
MIX = ROOT / "loadtest" / "workloads" / "mix.yaml"
CI_WORKLOAD = Path(__file__).with_name("workload-ci.yaml")
MAX_USERS = 30

# Locust's LocalRunner deals users through this dispatcher on one worker node. It runs in a
# child process: importing Locust monkey-patches the whole interpreter with gevent.
LOCUST_DEAL = """
import json, sys
from locust.dispatch import UsersDispatcher
from locust.runners import WorkerNode
from gemma_fleet.loadtest.workload import user_class_name

answers = []
for weights in json.loads(sys.stdin.read()):
    classes = [
        type(user_class_name(name), (), {"weight": w, "fixed_count": 0})
        for name, w in weights.items() if w > 0
    ]
    per_count = []
    for users in range(1, int(sys.argv[1]) + 1):
        dispatcher = UsersDispatcher(worker_nodes=[WorkerNode("one")], user_classes=classes)
        dispatcher.new_dispatch(target_user_count=users, spawn_rate=users)
        dispatcher._wait_between_dispatch = 0
        final = {}
        for final in dispatcher:
            pass
        per_count.append(final["one"])
    answers.append(per_count)
print(json.dumps(answers))
"""


def _weights(path: Path) -> dict[str, int]:
    return {w.name: w.weight for w in load_workload(path).workloads}


def _random_weights(rng: random.Random) -> dict[str, int]:
    weights = {f"load-{i}": rng.choice([0, 1, 1, 2, 3, 5, 8, 20]) for i in range(rng.randint(2, 9))}
    weights["load-0"] = max(1, weights["load-0"])  # Locust needs one class with users
    return weights


def test_the_deal_is_locusts_for_every_user_count_up_to_30() -> None:
    rng = random.Random(7)
    cases = [
        _weights(MIX),
        _weights(CI_WORKLOAD),
        {f"w{i}": 1 for i in range(6)},  # all tied: the class name decides
        {"chat-a": 3, "chat_b": 3, "docs": 0, "zz": 1},
        *(_random_weights(rng) for _ in range(12)),
    ]
    done = subprocess.run(
        [sys.executable, "-c", LOCUST_DEAL, str(MAX_USERS)],
        input=json.dumps(cases), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    by_locust = json.loads(done.stdout)
    for weights, locust_counts in zip(cases, by_locust, strict=True):
        for users, theirs in enumerate(locust_counts, start=1):
            ours = {user_class_name(name): n for name, n in deal(weights, users).items()}
            assert ours == theirs, (weights, users)


def test_the_mix_at_8_users_leaves_four_workloads_out_and_13_run_them_all() -> None:
    """The case that was found by hand: an 8-user spike on mix.yaml never ran three of its
    then ten workloads, and the verdict said the SLOs held. (Eleven since the PDF reports.)"""
    mix = load_workload(MIX)
    at_8 = staffing(mix, 8)
    left_out = ["responses-chat", "long-context", "pdf-reports", "limited-batch"]
    assert at_8.unstaffed == left_out
    assert at_8.users_for_all == 13
    assert staffing(mix, 13).unstaffed == [] and staffing(mix, 13).warning() is None
    warning = at_8.warning()
    assert warning is not None
    assert ", ".join(left_out) in warning and "--users 13" in warning


# When each of Locust's dispatches lands, ramping from none at a spawn rate (real waits).
LOCUST_RAMP = """
import json, sys, time
from locust.dispatch import UsersDispatcher
from locust.runners import WorkerNode

answers = []
for users, rate in json.loads(sys.stdin.read()):
    user = type("User", (), {"weight": 1, "fixed_count": 0})
    dispatcher = UsersDispatcher(worker_nodes=[WorkerNode("one")], user_classes=[user])
    dispatcher.new_dispatch(target_user_count=users, spawn_rate=rate)
    began, landed = time.monotonic(), []
    for dispatch in dispatcher:
        landed.append((time.monotonic() - began, dispatch["one"]["User"]))
    answers.append(landed)
print(json.dumps(answers))
"""


def test_the_users_started_in_a_test_are_as_many_as_locusts_ramp_starts() -> None:
    """A slow --spawn-rate in a short test leaves the last-dealt workloads without a user: the
    pre-run bound is the installed Locust's ramp, batch sizes and waits included."""
    cases = [(8, 2.5), (7, 4.0), (3, 1.0)]
    done = subprocess.run(
        [sys.executable, "-c", LOCUST_RAMP],
        input=json.dumps(cases), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    for (users, rate), landed in zip(cases, json.loads(done.stdout), strict=True):
        times = [at for at, _ in landed]
        # Halfway between two dispatches (and past the last): clear of the waits' jitter.
        ends = [(a + b) / 2 for a, b in itertools.pairwise(times)] + [times[-1] + 0.5]
        for end, (_, started) in zip(ends, landed, strict=True):
            spec = ShapeSpec(duration_s=end, users=users, spawn_rate=rate)
            assert spec.most_users_started() == started, (users, rate, end)


# The most users Locust's local runner has at once while a shape runs it (real waits): it asks
# the shape once a second and restarts its ramp whenever the answer changes.
LOCUST_SHAPE_RUN = """
import json, sys
import gevent
from locust import LoadTestShape, User, constant, task
from locust.env import Environment
from gemma_fleet.loadtest.shapes import ShapeSpec

answers = []
for raw in json.loads(sys.stdin.read()):
    spec = ShapeSpec.model_validate(raw)

    class Idle(User):
        wait_time = constant(600)

        @task
        def nothing(self):
            pass

    class Shape(LoadTestShape):
        def tick(self):
            return spec.tick(self.get_run_time())

    runner = Environment(user_classes=[Idle], shape_class=Shape()).create_local_runner()
    runner.start_shape()
    peak = 0
    while runner.state not in ("stopped", "quitting"):
        peak = max(peak, runner.user_count)
        gevent.sleep(0.05)
    runner.quit()
    answers.append(peak)
print(json.dumps(answers))
"""


@pytest.mark.slow
def test_a_shape_that_moves_starts_users_as_locusts_runner_does() -> None:
    """Each change of a step or diurnal shape's target restarts Locust's ramp with a batch at
    once, so at a slow rate such a shape runs more users than a ramp from a standing start
    (1 and 3 here), and the pre-run check must count them as Locust does."""
    specs = [
        ShapeSpec(kind="step", duration_s=9, users=6, steps=3, spawn_rate=0.1),
        ShapeSpec(kind="diurnal", duration_s=12, users=8, spawn_rate=0.2),
    ]
    done = subprocess.run(
        [sys.executable, "-c", LOCUST_SHAPE_RUN],
        input=json.dumps([s.model_dump() for s in specs]),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    peaks = json.loads(done.stdout)
    assert peaks == [3, 5]
    assert [s.most_users_started() for s in specs] == peaks


def test_the_spawn_rate_suggested_is_the_slowest_that_starts_them_all() -> None:
    for spec in (
        ShapeSpec(duration_s=30, users=8, spawn_rate=0.1),
        ShapeSpec(kind="step", duration_s=20, users=8, spawn_rate=0.1),
        ShapeSpec(kind="diurnal", duration_s=60, users=12, spawn_rate=0.05),
    ):
        rate = spec.spawn_rate_to_start(spec.users)
        assert spec.model_copy(update={"spawn_rate": rate}).most_users_started() == spec.users
        slower = spec.model_copy(update={"spawn_rate": rate - 0.01})
        assert slower.most_users_started() < spec.users, (spec.kind, rate)
    # 8 users in 30 s: the first at once, the 8th after 7 waits of 1/0.24 s, at 29.2 s
    assert ShapeSpec(duration_s=30, users=8, spawn_rate=0.1).spawn_rate_to_start(8) == 0.24
