#!/usr/bin/env python
"""The one entry point: ``python train.py stage=<name> [overrides]`` (``-m`` for sweeps).

Examples:
    python train.py                                   # the showcase demo on the default stack
    python train.py stage=pose_fit trainer.max_steps=300
    python train.py -m stage=pose_fit stage.lr=0.01,0.03 seed=0,1 hydra/launcher=joblib
    python train.py stage=pose_fit logger=wandb       # also log to W&B (offline by default)
"""

from avatar.cli import main

if __name__ == "__main__":
    main()
