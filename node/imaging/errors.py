"""The one error the imaging layer raises for input it will not turn into a volume."""

from __future__ import annotations

from node.errors import NodeError


class VolumeError(NodeError):
    """A series (or file) that cannot become a :class:`~node.imaging.volume.Volume`.

    ``reason`` is a short, human-readable sentence for job records, the API and the CLI. It never
    holds PHI: no patient names or IDs, no file names (they may carry PHI in exported folders).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
