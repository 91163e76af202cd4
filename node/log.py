"""Logging set-up. Log lines carry UIDs, AE titles and addresses, never patient data."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom's DEBUG output can dump dataset elements: keep it at INFO or above.
    logging.getLogger("pynetdicom").setLevel(max(logging.getLevelName(level), logging.INFO))
