"""What the operator-facing CLI commands do, beyond parsing their arguments (node/cli.py)."""
