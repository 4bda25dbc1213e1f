"""Routing: which provider and model answer a request."""

from fastroute.routing.rules import Route, RouteQuery, Router, Verdict

__all__ = ["Route", "RouteQuery", "Router", "Verdict"]
