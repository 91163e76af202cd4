"""The configured routes, compiled once; each matching route yields jobs (series x model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.routing.facts import SeriesFacts
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


class RouteSpec(Protocol):
    """A configured route (``node.config.RouteConfig``): its condition not yet compiled."""

    @property
    def name(self) -> str: ...
    @property
    def models(self) -> Sequence[str]: ...
    @property
    def on(self) -> str: ...
    @property
    def match(self) -> Mapping[str, Any]: ...


class Accepting(Protocol):
    """What a model declares it can read (``Manifest.accepts``)."""

    def rejects(self, header: Any, instance_count: int) -> str | None: ...


class Router:
    """Routes from the configuration, ANDed with what each model accepts."""

    def __init__(self, routes: Sequence[RouteSpec],
                 accepts: Mapping[str, Accepting] | None = None) -> None:
        self.routes = [
            Route(r.name, tuple(r.models), r.on, compile_condition(r.match)) for r in routes
        ]
        self.accepts = dict(accepts or {})

    def refusal(self, model: str, facts: SeriesFacts) -> str | None:
        """Why ``model`` does not take this series although a route chose it, if it does not."""
        accepts = self.accepts.get(model)
        if accepts is None:
            return None
        try:
            return accepts.rejects(facts.header, int(facts.get("instances", 0)))
        except Exception as exc:  # a malformed attribute: the model cannot judge the series
            return f"cannot check what the model accepts ({type(exc).__name__})"

    def evaluate(self, facts: Mapping[str, Any], on: str | None = None) -> list[Decision]:
        """Every route (of the given trigger, if any) with whether and why it matched."""
        return [
            Decision(route, route.condition(facts))
            for route in self.routes
            if on is None or route.on == on
        ]

    def jobs(self, facts: SeriesFacts, on: str) -> list[tuple[str, str]]:
        """(route name, model) for each model of each matching route that accepts the series,
        without repeats."""
        seen: set[str] = set()
        out: list[tuple[str, str]] = []
        for decision in self.evaluate(facts, on):
            if not decision.outcome.matched:
                continue
            for model in decision.route.models:
                if model not in seen and self.refusal(model, facts) is None:
                    seen.add(model)
                    out.append((decision.route.name, model))
        return out
