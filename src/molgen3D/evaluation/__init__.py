"""The `evaluate` and `rescore` commands over a run folder, and the training probe."""
