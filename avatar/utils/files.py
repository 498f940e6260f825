"""Reading the files a run is pointed at (weights, priors, codebooks, motions) with errors that
name the file, the config key that points at it and the likely cause.

A truncated download, an empty file, a file of another kind given to the wrong key: each fails
here with a sentence a user can act on, never with a bare ``BadZipFile`` or ``EOFError``, and
never with advice to disable safe loading (a weights file that needs full unpickling runs code
from the file; this project reads tensors only, except where a loader documents otherwise).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any


class InputFileError(ValueError):
    """A file named by the config cannot be read as what the config says it is."""


def describe(path: str | os.PathLike, config_key: str) -> str:
    return f"`{config_key}={path}`"


def _check_present(path: Path, config_key: str, what: str, hint: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{describe(path, config_key)}: no such file (expected {what}). {hint}".strip())
    if path.is_dir():
        raise InputFileError(
            f"{describe(path, config_key)} is a folder; give the {what} file inside it. {hint}".strip()
        )
    if path.stat().st_size == 0:
        raise InputFileError(
            f"{describe(path, config_key)} is empty (0 bytes), not {what}: an interrupted download or "
            f"copy. Copy the file again. {hint}".strip()
        )


def load_torch_file(path: str | os.PathLike, config_key: str, what: str, hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU with clear errors.

    ``what`` says what the file should be ("a mini guidance checkpoint"); ``hint`` says where a
    good one comes from. Raises :class:`InputFileError` (or ``FileNotFoundError``)."""
    import torch

    file = Path(path).expanduser()
    _check_present(file, config_key, what, hint)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not (starts_like_pickle(file) or _starts_like_zip(file)):  # random bytes, text, another format
            raise InputFileError(
                f"{describe(path, config_key)} is not a PyTorch file (it starts with {_head(file)!r}, neither "
                f"a zip archive nor a pickle): a corrupted download, or a file of another format. "
                f"Expected {what}. {hint}".strip()
            ) from err
        raise InputFileError(
            f"{describe(path, config_key)} holds pickled Python objects, not only tensors, so it is not "
            f"{what} (it may be a training checkpoint of another program). This project reads tensors "
            f"only and will not run code from a weights file. {hint}".strip()
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError) as err:
        raise InputFileError(
            f"{describe(path, config_key)} is not a readable PyTorch file ({type(err).__name__}: "
            f"{_first_line(err)}): it is truncated (an interrupted download or copy) or of another "
            f"format. Expected {what}. {hint}".strip()
        ) from err


def load_npz(path: str | os.PathLike, config_key: str, what: str, hint: str = "", keys=(), only=None) -> dict:
    """The arrays of an ``.npz`` file as a dict (read fully, file closed), with clear errors;
    ``keys`` are the arrays the caller needs (missing ones are named). ``only``: read just the
    arrays of these names that the file has (plus ``keys``), leaving the others unread."""
    import numpy as np

    file = Path(path).expanduser()
    _check_present(file, config_key, what, hint)
    try:
        with np.load(file, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise InputFileError(
                    f"{describe(path, config_key)} is a single .npy array, not {what} (an .npz archive). {hint}".strip()
                )
            wanted = None if only is None else set(only) | set(keys)
            arrays = {name: data[name] for name in data.files if wanted is None or name in wanted}
    except InputFileError:
        raise
    except ValueError as err:
        if "pickle" in str(err) and starts_like_pickle(file):
            raise InputFileError(
                f"{describe(path, config_key)} stores pickled objects, not plain arrays, so it is not "
                f"{what}; this project reads plain arrays only. {hint}".strip()
            ) from err
        raise _npz_unreadable(path, config_key, what, hint, err) from err
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, zlib.error) as err:
        raise _npz_unreadable(path, config_key, what, hint, err) from err
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InputFileError(
            f"{describe(path, config_key)} lacks the arrays {missing} (it has {sorted(arrays)}): not {what}. {hint}".strip()
        )
    return arrays


def _npz_unreadable(path, config_key, what, hint, err) -> InputFileError:
    return InputFileError(
        f"{describe(path, config_key)} is not a readable .npz archive ({type(err).__name__}: "
        f"{_first_line(err)}): it is truncated (an interrupted copy or run) or of another format. "
        f"Expected {what}. {hint}".strip()
    )


def check_file(path: str | os.PathLike, config_key: str, what: str, hint: str = "") -> Path:
    """``path`` (user folder expanded) if it names a non-empty file, else the error the loaders
    above give for a missing, empty or folder path (for loaders that read a format of their own)."""
    file = Path(path).expanduser()
    _check_present(file, config_key, what, hint)
    return file


def starts_like_pickle(path: str | os.PathLike) -> bool:
    """Whether a file begins as a pickle of protocol 2 or later does (what ``torch.save``'s legacy
    format and ``np.save`` of objects write): tells real pickles from random or truncated bytes."""
    head = _read_head(path, 2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def file_identity(path: str | os.PathLike) -> str:
    """``<path> (sha256 <short hash>)``: how a log line names the weights it really loaded."""
    return f"{path} (sha256 {short_hash(path)})"


def weights_record(path: str | os.PathLike, architecture: str, config_key: str) -> dict:
    """What a run records about a weights file it loaded (``loaded_weights`` of the component,
    copied into the run's ``run_info.json`` by the runner)."""
    return {"file": str(path), "sha256_12": short_hash(path), "architecture": architecture, "config_key": config_key}


def _starts_like_zip(path: str | os.PathLike) -> bool:
    return _read_head(path, 4) == b"PK\x03\x04"


def _read_head(path: str | os.PathLike, size: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _head(path: str | os.PathLike) -> bytes:
    return _read_head(path, 8)


def short_hash(path: str | os.PathLike, length: int = 12) -> str:
    """The first hex digits of a file's SHA-256: what a log line names to identify weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else repr(err)


# -- additions for the guidance backends (issue 23) -------------------------------------------
def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``; OpenAI's CLIP release
    format): a zip holding ``constants.pkl``, the marker ``torch.load`` itself checks for. A
    truncated archive is not a readable zip and answers False."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def load_safetensors_file(path: str | os.PathLike, config_key: str, what: str, hint: str = "") -> dict:
    """The tensors of a ``.safetensors`` file (on the CPU), with clear errors."""
    from safetensors.torch import load_file

    file = check_file(path, config_key, what, hint)
    try:
        return load_file(str(file), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError (an Exception)
        raise InputFileError(
            f"{describe(path, config_key)} is not a readable .safetensors file ({type(err).__name__}: "
            f"{_first_line(err)}): it is truncated (an interrupted download or copy) or of another "
            f"format. Expected {what}. {hint}".strip()
        ) from err


def describe_training_checkpoint(obj: Any) -> str | None:
    """A phrase naming a training checkpoint (Lightning's, or a plain ``{'epoch', 'state_dict',
    'optimizer'...}`` one), or None when ``obj`` does not look like one: the usual wrong file
    given where weights are expected."""
    if not isinstance(obj, dict):
        return None
    keys = set(obj)
    if "pytorch-lightning_version" in keys or {"epoch", "global_step", "state_dict"} <= keys:
        shown = sorted(str(k) for k in keys)[:6]
        return f"a Lightning training checkpoint (keys {shown})"
    if "state_dict" in keys and keys & {"epoch", "optimizer", "optimizer_states", "step"}:
        shown = sorted(str(k) for k in keys)[:6]
        return f"a training checkpoint (keys {shown})"
    return None


def load_torch_weights(path: str | os.PathLike, config_key: str, what: str, hint: str = "") -> Any:
    """:func:`load_torch_file`, after checking that the file starts as a PyTorch file does (a zip
    archive, or a pickle in the legacy format): random bytes, a text or HTML page saved by a
    failed download, or a ``.safetensors`` file under another extension are named as such,
    where ``torch.load`` would report them all as unsafe pickles."""
    file = check_file(path, config_key, what, hint)
    head = _read_head(file, 16)
    if not (_starts_like_zip(file) or starts_like_pickle(file)):
        if head[8:10] == b'{"':
            cause = "a .safetensors file under another extension: rename it to end in .safetensors"
        elif all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
            cause = "text (an HTML error page or a note saved in place of a failed download?)"
        else:
            cause = "random or corrupted data, or a file of another format"
        raise InputFileError(
            f"{describe(path, config_key)} is not a PyTorch file: it starts with {head[:8]!r}, neither a zip "
            f"archive (torch.save's format) nor a pickle (its legacy format). It is {cause}. "
            f"Expected {what}. {hint}".strip()
        )
    try:
        return load_torch_file(file, config_key, what, hint)
    except InputFileError as err:
        if isinstance(err.__cause__, pickle.UnpicklingError) and _pickles_a_lightning_checkpoint(file):
            raise InputFileError(
                f"{describe(path, config_key)} is a Lightning training checkpoint (it names "
                f"'pytorch-lightning_version' and holds pickled Python objects), not {what}. This project "
                f"reads tensors only and will not run code from a weights file. {hint}".strip()
            ) from err
        raise


def _pickles_a_lightning_checkpoint(file: Path) -> bool:
    """Whether the pickle of a torch.save archive names Lightning's version key (read as bytes,
    never unpickled)."""
    try:
        with zipfile.ZipFile(file) as archive:
            name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            return name is not None and b"pytorch-lightning_version" in archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
