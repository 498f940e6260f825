"""Puts the project's ``experiments/`` folder on Hydra's search path, so experiment overlays
(``experiments/experiment/<name>.yaml``) compose with ``experiment=<name>`` from anywhere."""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


class AvatarExperimentsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="avatar-experiments", path=f"file://{EXPERIMENTS_DIR}")
