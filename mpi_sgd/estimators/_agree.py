"""What the ranks agree on before and during a collective fit: errors, parameters, classes.

Everything travels as text (JSON or plain strings over ``Allgatherv``), never pickled.
"""

from __future__ import annotations

import builtins
import importlib
import json
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from mpi_sgd import errors
from mpi_sgd.comm import Communicator

T = TypeVar("T")


def communicator(comm: Any) -> Communicator:
    """The :class:`Communicator` of an estimator's ``comm`` parameter: a Communicator, an
    mpi4py communicator, or None for ``MPI.COMM_WORLD`` (resolved now, at fit time)."""
    if isinstance(comm, Communicator):
        return comm
    return Communicator(comm)


def _exception_class(name: str) -> type[Exception] | None:
    """The exception class called ``module:qualname``, if every rank can rebuild it from a
    message alone: a builtin exception, one of :mod:`mpi_sgd.errors`, or scikit-learn's."""
    module, _, qualname = name.partition(":")
    cls: object = None
    if module == "builtins":
        cls = getattr(builtins, qualname, None)
    elif module == "mpi_sgd.errors":
        cls = getattr(errors, qualname, None)
    elif module.startswith("sklearn.") and "." not in qualname:
        try:
            cls = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            cls = None
    if isinstance(cls, type) and issubclass(cls, Exception) and cls is not errors.PeerFailure:
        return cls
    return None


def raise_if_any(comm: Communicator, error: BaseException | None) -> None:
    """Raise on every rank when any rank passes an ``error``. Collective.

    Every rank raises the same exception: the lowest failing rank's class when it can be
    rebuilt from its message (``ValueError``, ``TypeError``, mpi_sgd's and scikit-learn's
    errors, ...), else :class:`~mpi_sgd.errors.PeerFailure`, with that rank's message after
    ``rank R:``. Only class names and messages travel, as text.
    """
    note = ""
    if error is not None:
        note = json.dumps([f"{type(error).__module__}:{type(error).__qualname__}", str(error)])
    failed = [(r, json.loads(n)) for r, n in enumerate(comm.allgather_str(note)) if n]
    if not failed:
        return
    rank, (name, message) = failed[0]
    more = f" (and {len(failed) - 1} other rank(s))" if len(failed) > 1 else ""
    cls = _exception_class(name)
    exc: Exception | None = None
    if cls is not None:
        try:
            exc = cls(f"rank {rank}{more}: {message}")
        except Exception:  # a constructor that needs more than a message
            exc = None
    if exc is None:
        text = f"{name.rpartition(':')[2]}: {message}"
        exc = errors.PeerFailure(rank, text, errors.EXIT_INTERNAL, len(failed))
    if isinstance(exc, errors.MpiSgdError):
        exc.collective = True
    raise exc from error


def agreed(comm: Communicator, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on this rank; when it raises on any rank, every rank raises (see
    :func:`raise_if_any`). On one process the exception is raised unchanged. Collective."""
    if comm.size == 1:
        return fn(*args)
    try:
        result = fn(*args)
    except Exception as exc:
        raise_if_any(comm, exc)
        raise  # (not reached)
    raise_if_any(comm, None)
    return result


def _describe(value: Any) -> Any:
    """A parameter value as comparable JSON (random states by type only)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.random.RandomState, np.random.Generator)):
        return f"<{type(value).__name__}>"
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return repr(value)


def check_same_params(params: dict[str, Any], comm: Communicator) -> None:
    """Raise ValueError on every rank unless every rank fits with the same parameters: a rank
    training other epochs or batches would leave its peers waiting. Collective.

    ``params`` is ``get_params(deep=False)`` without ``comm``.
    """
    if comm.size == 1:
        return
    mine = {k: _describe(v) for k, v in params.items()}
    texts = comm.allgather_str(json.dumps(mine, sort_keys=True))
    if len(set(texts)) == 1:
        return
    theirs = [json.loads(t) for t in texts]
    names = sorted(k for k in mine if len({json.dumps(t.get(k)) for t in theirs}) > 1)
    detail = "; ".join(
        f"{k}: " + ", ".join(f"rank {r} {t.get(k)!r}" for r, t in enumerate(theirs)) for k in names
    )
    raise ValueError(f"the ranks called fit with different parameters ({detail})")


# ------------------------------------------------------------------------------- classes
def _label_kind(values: np.ndarray) -> str:
    """``bool``, ``int``, ``float`` or ``str``: what these labels are."""
    kind = values.dtype.kind
    if kind in "biuf":
        return {"b": "bool", "i": "int", "u": "int", "f": "float"}[kind]
    if kind == "U":
        return "str"
    items = values.tolist()
    if all(isinstance(v, str) for v in items):
        return "str"
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        return "int"
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
        return "float"
    kinds = sorted({type(v).__name__ for v in items})
    raise ValueError(f"the class labels must be all numbers or all strings; got {kinds}")


def _local_labels(y: np.ndarray) -> str:
    """This rank's distinct labels as JSON ("" for no rows)."""
    if y.shape[0] == 0:
        return ""
    uniq = np.unique(y)
    kind = _label_kind(uniq)
    labels = [str(v) for v in uniq.tolist()] if kind == "str" else uniq.tolist()
    return json.dumps({"kind": kind, "dtype": uniq.dtype.str, "labels": labels})


def union_classes(y: np.ndarray, comm: Communicator) -> np.ndarray:
    """The sorted union of every rank's labels (numbers or strings), identical on every rank
    and of one dtype: the ranks' common numeric type, ``<U`` for strings, or object when a
    rank passed objects. Ranks without rows count for nothing. Collective."""
    local = agreed(comm, _local_labels, y)
    gathered = [json.loads(t) for t in comm.allgather_str(local) if t]
    if not gathered:
        raise ValueError("no rank has any rows: cannot fit on 0 samples")
    kinds = {g["kind"] for g in gathered}
    if "str" in kinds and len(kinds) > 1:
        raise ValueError(f"the ranks' labels mix strings and numbers ({sorted(kinds)})")
    values = sorted({v for g in gathered for v in g["labels"]})
    dtypes = [np.dtype(g["dtype"]) for g in gathered]
    if any(d.kind == "O" for d in dtypes):
        return np.array(values, dtype=object)
    if "str" in kinds:
        return np.array(values)
    return np.array(values, dtype=np.result_type(*dtypes))


def same_classes(classes: np.ndarray, comm: Communicator) -> None:
    """Raise ValueError on every rank unless all ranks passed the same ``classes``."""
    text = json.dumps([str(c) for c in classes.tolist()]) + classes.dtype.kind
    if len(set(comm.allgather_str(text))) > 1:
        raise ValueError("the ranks passed different classes to partial_fit")


def class_index(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each label's position in ``classes`` (float64); ValueError for an unknown label."""
    if y.shape[0] == 0:
        return np.empty(0)
    if classes.dtype.kind in "OU" or y.dtype.kind in "OU":
        lookup = {v: i for i, v in enumerate(classes.tolist())}
        try:
            return np.fromiter((lookup[v] for v in y.tolist()), dtype=np.float64, count=y.size)
        except (KeyError, TypeError):
            bad = next(v for v in y.tolist() if v not in lookup)
            raise ValueError(
                f"y contains the label {bad!r}, which is not one of the classes {classes.tolist()}"
            ) from None
    index = np.minimum(np.searchsorted(classes, y), classes.size - 1)
    unknown = classes[index] != y
    if np.any(unknown):
        raise ValueError(
            f"y contains the label {y[unknown][0]!r}, which is not one of the classes "
            f"{classes.tolist()}"
        )
    return index.astype(np.float64)
