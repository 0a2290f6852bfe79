"""The user's own chain: the Python door and the command door (issue 20)."""
