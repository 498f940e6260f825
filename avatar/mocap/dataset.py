"""Reading a folder of motion files: BVH, and CMU AMC with the subject's ``SS.asf`` beside it.

``root`` is either a folder of motion files (searched recursively) or a folder holding the
project corpus's ``*.tar.xz`` archives (``../shared/mocap``): each archive is then extracted
once into ``cache_dir("mocap")`` and its folder read. A file that fails to read is logged,
reported in ``problems`` and skipped; the rest still load. Each clip's CMU trial id is
``clip.trial_id`` (the shared corpus keeps one file per trial, so no de-duplication is done).
"""

from __future__ import annotations

import logging
import lzma
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

from avatar.mocap.asf_amc import AsfSkeleton, find_asf, read_amc, read_asf
from avatar.mocap.bvh import read_bvh
from avatar.mocap.types import MocapClip, MocapFormatError
from avatar.utils.paths import cache_dir

log = logging.getLogger(__name__)

FORMATS = {"bvh": ".bvh", "amc": ".amc"}
ARCHIVE_SUFFIX = ".tar.xz"
_STAMP = ".archive"  # in an extracted folder: the archive's name, size and mtime


def find_motion_files(
    root: str | Path, formats: tuple[str, ...] = ("bvh", "amc"), problems: list[tuple[str, str]] | None = None
) -> list[Path]:
    """Motion files under ``root`` (recursive, sorted; hidden files and folders skipped), after extracting
    any ``*.tar.xz`` archives in it (`extract_archives`; ``problems`` as there)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown motion formats {sorted(unknown)}; known: {sorted(FORMATS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"mocap folder {root} does not exist")
    suffixes = {FORMATS[f] for f in formats}
    files = set()
    for folder in [root, *extract_archives(root, problems=problems)]:
        for path in folder.rglob("*"):
            hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
            if path.suffix.lower() in suffixes and not hidden and path.is_file():
                files.add(path)
    return sorted(files)


def extract_archives(
    root: str | Path, dest: str | Path | None = None, problems: list[tuple[str, str]] | None = None
) -> list[Path]:
    """Extract each ``NAME.tar.xz`` directly in ``root`` to ``dest/NAME`` (default
    ``cache_dir("mocap")``) unless already there; returns the extracted folders. An archive
    that cannot be extracted raises `MocapFormatError`, or with a ``problems`` list is logged,
    appended to it as ``(path, message)`` and skipped."""
    folders = []
    for archive in sorted(Path(root).glob(f"*{ARCHIVE_SUFFIX}")):
        try:
            folders.append(_extract(archive, Path(dest) if dest else cache_dir("mocap")))
        except MocapFormatError as err:
            if problems is None:
                raise
            log.warning("skipping %s", err)
            problems.append((str(archive), str(err)))
    return folders


def _extract(archive: Path, dest: Path) -> Path:
    """``archive`` extracted to ``dest/NAME``, at most once.

    Extraction goes to a temporary folder renamed into place, so a folder that exists is
    complete. A stamp records the archive's size and mtime: a changed archive is extracted
    again (a folder without a stamp, unpacked by hand, is trusted).
    """
    name = archive.name[: -len(ARCHIVE_SUFFIX)]
    target = dest / name
    stat = archive.stat()
    stamp = f"{archive.name} {stat.st_size} {int(stat.st_mtime)}\n"
    stamp_file = target / _STAMP
    if target.is_dir() and (not stamp_file.exists() or stamp_file.read_text() == stamp):
        return target
    log.info("extracting %s to %s", archive, target)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest))
    stale = tmp.with_name(tmp.name + ".stale")
    # The "data" filter refuses absolute paths, links out of the folder and device files.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(tmp, **safe)
        # Each corpus archive holds one folder of its own name; otherwise take it all.
        inner = tmp / name if [p.name for p in tmp.iterdir()] == [name] else tmp
        (inner / _STAMP).write_text(stamp)
        if target.exists():  # a stale extraction: move it aside, then replace it
            os.replace(target, stale)
        try:
            os.replace(inner, target)
        except OSError:
            if not target.is_dir():  # anything but another process finishing first
                raise
    except (OSError, EOFError, lzma.LZMAError, tarfile.TarError) as err:
        raise MocapFormatError(f"{archive}: cannot extract ({err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return target


def iter_folder(
    root: str | Path,
    formats: tuple[str, ...] = ("bvh", "amc"),
    on_error: str = "skip",
    problems: list[tuple[str, str]] | None = None,
) -> Iterator[MocapClip]:
    """Clips of `find_motion_files`, read one at a time (the whole corpus held at once is
    about 1 GB of rotation matrices). ``on_error``: "skip" logs a bad file, appends
    ``(path, message)`` to ``problems`` and goes on; "raise" stops at it."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if problems is None:
        problems = []  # bad files are still skipped; the caller just does not collect them
    skeletons: dict[Path, AsfSkeleton | MocapFormatError] = {}  # each subject's ASF read once
    for path in find_motion_files(root, formats, problems if on_error == "skip" else None):
        try:
            if path.suffix.lower() == ".bvh":
                yield read_bvh(path)
                continue
            asf_path = find_asf(path)
            if asf_path is not None and asf_path not in skeletons:
                try:
                    skeletons[asf_path] = read_asf(asf_path)
                except MocapFormatError as err:
                    skeletons[asf_path] = err
            asf = skeletons.get(asf_path)
            if isinstance(asf, MocapFormatError):
                raise MocapFormatError(f"{path}: its skeleton is unusable: {asf}")
            yield read_amc(path, asf)  # without an ASF, read_amc raises saying so
        except MocapFormatError as err:
            if on_error == "raise":
                raise
            log.warning("skipping %s", err)
            problems.append((str(path), str(err)))


def load_folder(
    root: str | Path, formats: tuple[str, ...] = ("bvh", "amc"), on_error: str = "skip"
) -> tuple[list[MocapClip], list[tuple[str, str]]]:
    """All clips under ``root`` and the ``(path, message)`` of each file that failed."""
    problems: list[tuple[str, str]] = []
    clips = list(iter_folder(root, formats, on_error, problems))
    return clips, problems
