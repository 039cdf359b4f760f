"""Routing: which pool serves a request, decided from what the request needs."""

from gemma_fleet.routing.policy import (
    SATURATED,
    PoolView,
    RequestNeeds,
    RouteDecision,
    RoutingError,
    permits,
    route,
)

__all__ = [
    "SATURATED",
    "PoolView",
    "RequestNeeds",
    "RouteDecision",
    "RoutingError",
    "permits",
    "route",
]
