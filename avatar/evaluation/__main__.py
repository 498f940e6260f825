"""``python -m avatar.evaluation <command> ...``: the same as ``avatar-eval``."""

from avatar.evaluation.cli import main

if __name__ == "__main__":
    main()
