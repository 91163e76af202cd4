"""Why a result object could not be built: one error type the pipeline can catch and show."""

from __future__ import annotations

from node.errors import NodeError


class ResultsError(NodeError, ValueError):
    """A SEG or SR cannot be built from these inputs; the message says what is missing."""


class SourceError(ResultsError):
    """The source images lack attributes that a SEG/SR must copy or reference."""


class TemplateError(ResultsError):
    """An SR template is invalid; the message starts with the file and the offending key."""


class EmptyResultError(ResultsError):
    """Nothing to encode: the model found no voxel of any label (a SEG needs one segment)."""
