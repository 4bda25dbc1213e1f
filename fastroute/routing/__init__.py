"""Routing: which provider and model answer a request."""

from fastroute.routing.rules import Route, Router

__all__ = ["Route", "Router"]
