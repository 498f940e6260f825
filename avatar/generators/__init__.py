"""Method components of the stages, one package per stage (``pose``, ``motion``), each with a
registry from which the stage builds the one its config names."""
