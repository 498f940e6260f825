"""The mocap corpus's ``MANIFEST.tsv`` (../shared/mocap/README.md): one row per clip file with
CMU's keyword categories ("walk", "run/jog|jump/hop/leap", ...) and its one-line description
("walk on uneven terrain", "salsa dance", ...). Codebook entries name their clip in ``sources``
("<folder>/<clip>.<ext> @ <frame>"), and the file stem is the key into the manifest.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "MANIFEST.tsv"


@dataclass(frozen=True)
class ClipInfo:
    categories: frozenset[str]
    description: str


def read_manifest(path: str | Path, key: str = "manifest") -> dict[str, ClipInfo]:
    """Clip name (file stem) -> its categories and description. ``key`` names the setting that
    gave the path, for the error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}={str(path)!r}: no such file; give the mocap corpus's {MANIFEST_NAME} (e.g. ../shared/mocap/{MANIFEST_NAME})"
        )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not {"rel_path", "categories"} <= set(rows[0]):
        raise ValueError(f"{path} ({key}) has no rel_path/categories columns: is it the corpus's {MANIFEST_NAME}?")
    return {
        Path(row["rel_path"]).stem: ClipInfo(
            frozenset(c for c in row["categories"].split("|") if c), (row.get("description") or "").strip()
        )
        for row in rows
    }


def source_clip(source: str) -> str:
    """The clip name of a codebook entry's source ("<folder>/<clip>.<ext> @ frame <i>")."""
    return Path(source.split(" @ ")[0]).stem
