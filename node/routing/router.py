"""The configured routes, compiled once; each matching route yields jobs (series x model)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node.config import RouteConfig
from node.routing.rules import Condition, Outcome, compile_condition


@dataclass(frozen=True)
class Route:
    name: str
    models: tuple[str, ...]
    on: str
    condition: Condition


@dataclass(frozen=True)
class Decision:
    route: Route
    outcome: Outcome


class Router:
    def __init__(self, routes: list[RouteConfig]) -> None:
        self.routes = [
            Route(r.name, tuple(r.models), r.on, compile_condition(r.match)) for r in routes
        ]

    def evaluate(self, facts: Mapping[str, Any], on: str | None = None) -> list[Decision]:
        """Every route (of the given trigger, if any) with whether and why it matched."""
        return [
            Decision(route, route.condition(facts))
            for route in self.routes
            if on is None or route.on == on
        ]

    def jobs(self, facts: Mapping[str, Any], on: str) -> list[tuple[str, str]]:
        """(route name, model) for each model of each matching route, without repeats."""
        seen: set[str] = set()
        out: list[tuple[str, str]] = []
        for decision in self.evaluate(facts, on):
            if not decision.outcome.matched:
                continue
            for model in decision.route.models:
                if model not in seen:
                    seen.add(model)
                    out.append((decision.route.name, model))
        return out
