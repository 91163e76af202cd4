"""Sending results to PACS: C-STORE, STOW-RS and back to the caller, from the outbox."""

from node.sender.outbox import RoundSummary, Sender, outbox_rows

__all__ = ["RoundSummary", "Sender", "outbox_rows"]
