"""Sub-commands of the ``dynface`` CLI (see dynface.cli)."""
