"""Re-save an SMPL release pickle without chumpy, so ``smplx`` (and ``body=smpl``) reads it.

The SMPL "for Python" releases (``basicModel_*_lbs_10_207_0_v1.0.0.pkl``,
``basicmodel_*_lbs_10_207_0_v1.1.0.pkl``) pickle some arrays as chumpy objects (``chumpy.ch.Ch``),
and chumpy 0.70 no longer imports on current numpy (it imports ``numpy.bool``), so
``pip install chumpy`` does not help. This converter needs neither chumpy nor scipy::

    python -m avatar.body.convert_smpl basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl /data/body_models/smpl/SMPL_NEUTRAL.pkl

It unpickles the file with an allow-list (numpy arrays, chumpy and scipy.sparse objects, plain
Python containers; anything else, which could run code, is refused), turns each chumpy object
into the array it holds (``Ch.x``) and each sparse matrix into a dense array, and writes a
pickle of plain numpy arrays. OUT may be a folder: the file is then written there as
``SMPL_<GENDER>.pkl`` (gender read from the input's name), the layout ``body.model_path``
expects. smplx reads SMPL from ``.pkl`` only, so the output is always a pickle.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from avatar.utils.io import atomic_path

# (module, name) pairs the unpickler may construct; modules are as written by Python 2 or 3.
_NUMPY_GLOBALS = {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer"}
_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric")  # fmt: skip
_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
_BUILTINS = {"object", "set", "frozenset", "list", "dict", "tuple", "slice", "complex", "bytearray"}


class SmplConversionError(ValueError):
    """The file is not an SMPL pickle this converter can read; the message says why."""


class _Stub:
    """Stands in for a chumpy or scipy.sparse object: keeps the pickled state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    @property
    def state(self) -> dict:
        state = self.__dict__.get("_state")
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):  # (dict, slots)
            state = state[0]
        return state if isinstance(state, dict) else {}


_stubs: dict[tuple[str, str], type] = {}


def _stub(module: str, name: str) -> type:
    if (module, name) not in _stubs:
        _stubs[(module, name)] = type(name, (_Stub,), {"__module__": module, "_origin": f"{module}.{name}"})
    return _stubs[(module, name)]


class _SmplUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy.") or module.startswith("scipy.sparse"):
            return _stub(module, name)
        if module in _NUMPY_MODULES and name in _NUMPY_GLOBALS:
            if _NUMPY_2:  # numpy >= 2 moved numpy.core to numpy._core (the old name warns)
                module = module.replace("numpy.core", "numpy._core")
            return super().find_class(module, name)
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return super().find_class("builtins", name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return super().find_class("copyreg", name)
        if module == "_codecs" and name == "encode":  # bytes in protocol 0/1 pickles of Python 3
            return super().find_class(module, name)
        raise SmplConversionError(
            f"refusing to unpickle {module}.{name}: an SMPL model file holds numpy arrays, chumpy and "
            "scipy.sparse objects only (anything else could run code)"
        )


def _sparse_to_dense(obj: _Stub) -> np.ndarray:
    state = obj.state
    origin = type(obj)._origin
    shape = tuple(int(n) for n in state.get("_shape", state.get("shape", ())))
    dense = np.zeros(shape, dtype=np.asarray(state.get("data", np.zeros(0))).dtype)
    fmt = str(state.get("format", origin.rsplit(".", 1)[-1][:3]))
    if fmt in ("csc", "csr"):
        data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        rows, cols = (indices, outer) if fmt == "csc" else (outer, indices)
    elif fmt == "coo":
        data = np.asarray(state["data"])
        rows, cols = (state["row"], state["col"]) if "row" in state else state["coords"]
    else:
        raise SmplConversionError(f"unsupported sparse matrix {origin} (format {fmt!r})")
    np.add.at(dense, (rows, cols), data)
    return dense


def to_plain(value: Any, name: str = "") -> Any:
    """A chumpy object as the array it holds, a sparse matrix as a dense array; other values as they are."""
    if isinstance(value, _Stub):
        origin = type(value)._origin
        if origin.startswith("scipy.sparse"):
            return _sparse_to_dense(value)
        state = value.state
        if "x" not in state:
            raise SmplConversionError(
                f"{name!r} is a {origin} expression (not a plain chumpy array); this converter reads "
                "plain chumpy arrays (chumpy.ch.Ch) only"
            )
        return np.asarray(to_plain(state["x"], name), dtype=np.float64)
    if isinstance(value, dict):
        return {k: to_plain(v, f"{name}.{k}" if name else str(k)) for k, v in value.items()}
    return value


def read_smpl_pickle(path: str | Path) -> dict:
    """An SMPL model pickle (chumpy or not) as a dict of plain numpy arrays, without chumpy."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SMPL model file")
    if path.stat().st_size == 0:
        raise SmplConversionError(f"{path} is empty (0 bytes): an interrupted download or copy")
    try:
        with open(path, "rb") as fh:
            data = _SmplUnpickler(fh, encoding="latin1").load()
    except SmplConversionError as err:
        raise SmplConversionError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise SmplConversionError(
            f"{path} is not a readable SMPL pickle ({type(err).__name__}: {err}): truncated or of another format"
        ) from err
    if not isinstance(data, dict) or not {"v_template", "f", "weights", "shapedirs"} <= set(map(str, data)):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise SmplConversionError(f"{path} holds {found}, not an SMPL model (v_template, f, weights, shapedirs, ...)")
    return to_plain(data)


def output_path(source: Path, out: Path) -> Path:
    """``out``, or for a folder ``out/SMPL_<GENDER>.pkl`` with the gender from ``source``'s name."""
    if not out.is_dir():
        return out
    match = re.search(r"(?:^|_)(neutral|male|female|m|f)(?:_|\.|$)", source.name.lower())
    if not match:
        raise SmplConversionError(
            f"cannot tell the gender of {source.name}: give OUT as a file name (SMPL_NEUTRAL.pkl, ...)"
        )
    gender = {"m": "male", "f": "female"}.get(match.group(1), match.group(1))
    return out / f"SMPL_{gender.upper()}.pkl"


def convert(source: str | Path, out: str | Path) -> Path:
    """Write ``source`` (an SMPL pickle) as a chumpy-free pickle at ``out``; returns the file written."""
    source = Path(source).expanduser()
    model = read_smpl_pickle(source)
    target = output_path(source, Path(out).expanduser())
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        pickle.dump(model, fh, protocol=4)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avatar.body.convert_smpl",
        description="Re-save an SMPL release .pkl (with chumpy objects) as plain numpy arrays that smplx reads.",
    )
    parser.add_argument("source", help="the release file, e.g. basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl")
    parser.add_argument("out", help="the .pkl to write, or a folder (then <folder>/SMPL_<GENDER>.pkl)")
    args = parser.parse_args(argv)
    try:
        target = convert(args.source, args.out)
    except (SmplConversionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {target}: point body.model_path at it (or at {target.parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
