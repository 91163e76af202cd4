"""The base of the node's own errors, so a caller (a worker, a front door) catches one type.

Each error of the node derives from :class:`NodeError`, and also from the built-in type its
callers have always caught (``ValueError``, ``RuntimeError``, ``ConnectionError``), so the message
of a ``NodeError`` is meant for the operator: it names the problem, never patient data.
"""

from __future__ import annotations


class NodeError(Exception):
    """An error of the node itself (not a bug): its message says what is wrong."""


class StartupError(NodeError, RuntimeError):
    """The node must not start; the message says why (an invalid model, a missing one...)."""
