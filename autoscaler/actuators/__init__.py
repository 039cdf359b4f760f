"""Where the controller's decisions land: Ray Serve on a local cluster (`ray_serve`) or a
KubeRay RayService (`kubernetes`). Both follow the controller pattern's contract: `observe()`
reads the live state, `apply()` makes it match a desired state, and applying the state that is
already there changes nothing (idempotent), so a controller that restarts or misses a step
simply converges on the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class FleetState:
    """Replicas per model pool and nodes per node pool. `nodes` is empty where the actuator
    does not manage nodes (a local Ray cluster's nodes are fixed).

    `serving` is observed only, never applied: per model pool, how many of its replicas are
    up and loaded now, where the actuator can tell (a pool absent: unknown). A target is not a
    replica - one can wait for a GPU for as long as its node takes to come, or forever - and a
    re-layout must not take a model's old replicas away before the new ones serve."""

    replicas: Mapping[str, int]
    nodes: Mapping[str, int] = field(default_factory=dict)
    serving: Mapping[str, int] = field(default_factory=dict)


class ActuatorError(RuntimeError):
    """The actuator cannot read or change the fleet; the message says what to fix."""


class Actuator(Protocol):
    """Reads and changes the running fleet."""

    @property
    def manages_nodes(self) -> bool:
        """Whether `apply` changes node counts (else they are only reported)."""
        ...

    def observe(self) -> FleetState:
        """The fleet as it is now: target replicas per pool, nodes per node pool."""
        ...

    def apply(self, desired: FleetState) -> None:
        """Make the fleet match `desired` for the pools and node pools it names."""
        ...


class InMemoryActuator:
    """A fleet that exists only in this process: `apply` records, `observe` reads back.

    Behind `--actuator none` it lets the controller run its full loop against metrics and
    print what it would do, starting from the fleet file's starting replicas.
    """

    manages_nodes = True

    def __init__(self, state: FleetState) -> None:
        self.state = state
        self.history: list[FleetState] = []

    def observe(self) -> FleetState:
        """The last applied state (or the starting one)."""
        return self.state

    def apply(self, desired: FleetState) -> None:
        """Record `desired` as the new state."""
        self.state = FleetState(
            replicas={**self.state.replicas, **desired.replicas},
            nodes={**self.state.nodes, **desired.nodes},
        )
        self.history.append(self.state)
