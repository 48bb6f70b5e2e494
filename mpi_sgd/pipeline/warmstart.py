"""``--init DIR``: the starting parameters of a fit from a saved model. Collective.

Rank 0 reads the model (:func:`~mpi_sgd.state.export.load_model`: every field and array
checked), checks that it is a model of this run's kind, width and classes, converts its
raw-feature coefficients to the parameters the solver works on (under ``--standardize`` the
standardized ones: :func:`~mpi_sgd.model.standardize.from_original_scale`), and writes them
into ``model.params``; the other ranks get them by one broadcast, and the digest check
confirms every rank holds the same bytes. Any solver then starts from ``model.params``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from mpi_sgd.comm import Communicator, broadcast_params, check_identical_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.errors import CheckpointError, everywhere
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.standardize import from_original_scale
from mpi_sgd.model.vertical import BlockModel
from mpi_sgd.state.export import SavedModel, load_model

# A standardized intercept this small (relative to the parameters' size) is the 0 of a model
# without an intercept, after the round trip through the raw-feature coefficients.
_ZERO_INTERCEPT_RTOL = 1e-9


def warm_start(
    directory: str,
    config: TrainConfig,
    model: LinearModel,
    classes: np.ndarray,
    source: str,
    comm: Communicator,
) -> str:
    """Set ``model.params`` (identical on every rank) from the model saved in ``directory``.
    Collective.

    Parameters
    ----------
    directory : str
        ``--init``: a directory ``load_model`` reads.
    config : TrainConfig
        This run's (its ``model`` and ``fit_intercept`` must fit the saved model).
    model : LinearModel
        Built for this run's data (its width, outputs and, under ``--standardize``, scaler).
    classes : ndarray, shape (n_classes,)
        This run's classes, agreed over the ranks (empty for regression).
    source : str
        The training data, for the messages.
    comm : Communicator

    Returns
    -------
    str
        A console line saying where the fit starts.

    Raises
    ------
    CheckpointError
        On every rank (exit 5): the model cannot be read, or it differs from this run's in
        kind, feature count, outputs or classes, or has an intercept under ``--no-intercept``
        (the message names what differs, with both values).
    """
    if isinstance(model, BlockModel):
        return _warm_start_block(directory, config, model, classes, source, comm)
    with comm.collective_section():
        if comm.is_root:
            try:
                saved = load_model(directory)
            except CheckpointError as exc:
                raise CheckpointError(f"--init {directory}: {exc}") from exc
            check_init_compatible(saved, directory, config, model, classes, source)
            coef, intercept = saved.coef_, saved.intercept_
            if model.scaler is not None:
                coef, intercept = from_original_scale(
                    coef, intercept, model.scaler.offset, model.scaler.scale
                )
            if not config.fit_intercept:
                intercept = _no_intercept(intercept, coef, directory)
            model.coef[...] = coef
            model.intercept[...] = intercept
    broadcast_params(model.params, comm)
    check_identical_params(model.shared_state(), comm, "the start from --init")
    scale = " (converted to the standardized features)" if model.scaler is not None else ""
    return f"starting from the model in --init {directory}{scale}"


def _warm_start_block(
    directory: str,
    config: TrainConfig,
    model: BlockModel,
    classes: np.ndarray,
    source: str,
    comm: Communicator,
) -> str:
    """``--init`` for a feature-partitioned model: every rank reads the saved (full) model and
    takes its block of the coefficients; under ``--standardize`` the standardized intercept
    ``b + Σ_j coef_j·c_j`` sums the blocks' shares (one Allreduce of K values). Collective."""
    saved: SavedModel | None = None
    with comm.collective_section():
        try:
            saved = load_model(directory)
        except CheckpointError as exc:
            raise CheckpointError(f"--init {directory}: {exc}") from exc
        check_init_compatible(
            saved, directory, config, model, classes, source, n_features=model.n_features_total
        )
    assert saved is not None
    digest = hashlib.sha256(np.ascontiguousarray(saved.coef_, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(saved.intercept_, dtype=np.float64).tobytes())
    if len(set(comm.allgather_str(digest.hexdigest()))) > 1:
        raise everywhere(
            CheckpointError(
                f"--init {directory}: the ranks read different models (is it on a file "
                "system that every rank sees?)"
            )
        )
    block = model.layout.block
    coef = np.asarray(saved.coef_[:, block.start : block.stop], dtype=np.float64)
    intercept = np.asarray(saved.intercept_, dtype=np.float64).copy()
    if model.scaler is not None:
        coef, share = from_original_scale(
            coef, np.zeros_like(intercept), model.scaler.offset, model.scaler.scale
        )
        comm.allreduce_sum_(share)
        intercept += share
    if not config.fit_intercept:
        with comm.collective_section():
            intercept = _no_intercept(intercept, saved.coef_, directory)
    model.coef[...] = coef
    model.intercept[...] = intercept
    check_identical_params(model.shared_state(), comm, "the start from --init")
    scale = " (converted to the standardized features)" if model.scaler is not None else ""
    return f"starting from the model in --init {directory}{scale}, each rank its block"


def check_init_compatible(
    saved: SavedModel,
    directory: str,
    config: TrainConfig,
    model: LinearModel,
    classes: np.ndarray,
    source: str,
    n_features: int | None = None,
) -> None:
    """Raise :class:`CheckpointError` naming the first difference between the saved model and
    this run's: kind (``--model``), feature count (``n_features``, the model's by default),
    classes, outputs."""
    where = f"--init {directory}"
    width_here = model.n_features if n_features is None else n_features
    if saved.model != config.model:
        raise CheckpointError(
            f"{where} holds a {saved.model} model and this run trains --model {config.model}: "
            "start from a model of the same kind"
        )
    width = saved.coef_.shape[1]
    if width != width_here:
        raise CheckpointError(
            f"{where} has {width} features and --train {source} has {width_here}: start "
            "from a model trained on data of the same width"
        )
    saved_classes = [float(c) for c in saved.metadata.get("classes", [])]
    here = [float(c) for c in classes]
    if saved_classes != here:
        raise CheckpointError(
            f"{where} was trained on classes {_show(saved_classes)} and --train {source} has "
            f"classes {_show(here)}: start from a model of the same classes"
        )
    if saved.coef_.shape[0] != model.n_outputs:  # (a one-vs-rest estimator's, say)
        raise CheckpointError(
            f"{where} has {saved.coef_.shape[0]} outputs and this --model {config.model} has "
            f"{model.n_outputs}"
        )


def _no_intercept(intercept: np.ndarray, coef: np.ndarray, directory: str) -> np.ndarray:
    """The intercept of a start under ``--no-intercept``: zeros, if the saved model has none
    (up to the rounding of its conversion), else a :class:`CheckpointError`."""
    size = max(float(np.max(np.abs(coef), initial=0.0)), 1.0)
    if float(np.max(np.abs(intercept), initial=0.0)) > _ZERO_INTERCEPT_RTOL * size:
        raise CheckpointError(
            f"--init {directory} has an intercept ({_show(list(np.ravel(intercept)))}) and "
            "--no-intercept fits none: start from a model trained with --no-intercept, or drop "
            "--no-intercept"
        )
    return np.zeros_like(intercept)


def _show(values: list[float]) -> str:
    """A short list for a message: ``[0, 1]``, at most 10 values."""
    shown = ", ".join(f"{v:g}" for v in values[:10])
    return f"[{shown}{', ...' if len(values) > 10 else ''}]"
