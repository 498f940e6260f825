"""Lightning plumbing shared by every stage: trainer, loggers, checkpoints, run records."""
