"""The full-batch solvers under mpiexec -n 2 and an uneven -n 3, with rank 0 holding no rows.

Each rank holds a seeded random share of a real data set proportional to its rank squared (so
rank 0 has none, and the others unequal, non-contiguous rows). The distributed solution must
equal the one-process solution on the whole data set (computed on every rank with the serial
communicator) to rounding-level tolerances, and be bitwise identical on every rank; stop
requests and failures on one rank are agreed by every rank.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from mpi_sgd.comm import Communicator, params_digest
from mpi_sgd.errors import DivergenceError, PeerFailure
from mpi_sgd.runtime.faults import FaultInjector
from mpi_sgd.runtime.preemption import StopRequest
from mpi_sgd.solvers.base import FitHooks
from mpi_sgd.solvers.fullbatch import STOPPED
from tests import fullbatch_reference as ref
from tests.fullbatch_setup import SOLVERS, make_objective, through_npz
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(180)]


def my_rows(n: int, comm: Communicator) -> np.ndarray:
    """Rank r's share ∝ r² of a seeded permutation of the n rows (rank 0: none)."""
    weights = np.arange(comm.size, dtype=float) ** 2
    cuts = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)
    perm = np.random.default_rng(11).permutation(n)
    return np.sort(perm[cuts[comm.rank] : cuts[comm.rank + 1]])


def distributed(comm, solver, kind, name, l2, l1, **kw):
    X, y = ref.dataset(name)
    objective = make_objective(kind, X, y, l2, l1, comm=comm, rows=my_rows(X.shape[0], comm))
    return SOLVERS[solver](objective, **kw)


def serial(solver, kind, name, l2, l1, **kw):
    X, y = ref.dataset(name)
    return SOLVERS[solver](make_objective(kind, X, y, l2, l1), **kw)


def assert_identical_everywhere(comm, arrays: dict[str, np.ndarray], what: str) -> None:
    digest = "".join(params_digest(np.ascontiguousarray(a)) for _, a in sorted(arrays.items()))
    digests = comm.allgather_str(digest)
    assert_all(comm, len(set(digests)) == 1, f"{what} differ between ranks: {digests}")


CASES = [
    ("lbfgs", "logistic", "breast_cancer", 1e-2, 0.0),
    ("lbfgs", "logistic", "breast_cancer", 1e-3, 0.01),  # OWL-QN, elastic net
    ("lbfgs", "softmax", "iris", 1e-2, 0.0),
    ("lbfgs", "squared", "diabetes", 0.0, 0.01),  # OWL-QN, pure L1
    ("lbfgs", "squared_hinge", "breast_cancer", 1e-2, 0.0),
    ("cg", "logistic", "breast_cancer", 1e-3, 0.0),
    ("cg", "softmax", "wine", 1e-3, 0.0),
    ("cholesky", "logistic", "breast_cancer", 1e-3, 0.0),
    ("cholesky", "softmax", "iris", 1e-3, 0.0),
    ("cholesky", "squared", "diabetes", 1e-3, 0.0),
]


@pytest.mark.parametrize(("solver", "kind", "name", "l2", "l1"), CASES)
def test_uneven_ranks_with_an_empty_one_equal_one_process(comm, solver, kind, name, l2, l1):
    tol = 1e-12
    mpi = distributed(comm, solver, kind, name, l2, l1, tol=tol, check_every=1)
    n_local = mpi.objective.data.X.shape[0]
    assert_all(comm, (n_local == 0) == (comm.rank == 0), "only rank 0 holds no rows")
    mpi.fit()
    one = serial(solver, kind, name, l2, l1, tol=tol)
    one.fit()
    X, y = ref.dataset(name)
    theta = mpi.model.params
    assert_all(comm, ref.optimality(kind, theta, X, y, l2, l1) <= 1e-11, "not at the optimum")
    other = one.model.params.copy()
    if kind == "softmax":
        # the intercepts are determined up to one common constant (F does not change along
        # it); Newton-Cholesky's ridge lets rounding move it by ~1e-8: compare them centred
        K = ref.n_outputs(kind, y)
        shift = theta[-K:].mean() - other[-K:].mean()
        assert_all(comm, abs(shift) < 1e-7, f"intercepts' common level moved by {shift:.3g}")
        other[-K:] += shift
    assert_allclose_all(comm, theta, other, rtol=0, atol=1e-9, what="-n N vs -n 1")
    F, F_one = mpi.objective_value, one.objective_value
    assert_all(comm, abs(F - F_one) <= 1e-13 * abs(F_one), f"objective {F!r} vs {F_one!r}")
    if l1 > 0:
        n_coef = theta.shape[0] - ref.n_outputs(kind, y)
        same = bool(np.array_equal(theta[:n_coef] == 0, one.model.params[:n_coef] == 0))
        assert_all(comm, same, "zero pattern differs from -n 1")
    # every rank: the same bytes of parameters, history, counters and result
    assert_identical_everywhere(comm, mpi.state_dict(), "solver states")
    results = comm.allgather_str(repr(mpi.result))
    assert_all(comm, len(set(results)) == 1, f"results differ: {results}")


@pytest.mark.parametrize("solver", ["lbfgs", "cg", "cholesky"])
def test_a_stop_on_one_rank_is_agreed_and_the_resumed_run_is_exact(comm, solver):
    last = comm.size - 1
    stop = StopRequest()
    saved = []

    def on_iteration(report):
        if report.iteration == 3 and comm.rank == last:
            stop.reason = "SIGTERM"  # what the handler does, on this rank only

    def checkpoint(s):
        saved.append(through_npz(s.state_dict()))

    args = ("softmax", "iris", 1e-3, 0.0)
    hooks = FitHooks(stop_request=stop, checkpoint=checkpoint)
    stopped = distributed(comm, solver, *args, tol=1e-12, hooks=hooks)
    stopped.fit(on_iteration)
    assert_all(comm, stopped.result.termination == STOPPED, repr(stopped.result))
    assert_all(comm, stopped.iterations == 3, f"stopped after {stopped.iterations}")
    assert_all(comm, stopped.stop_reason == "SIGTERM (on 1 rank)", str(stopped.stop_reason))
    assert_all(comm, len(saved) == 1 and int(saved[0]["t"]) == 3, "one checkpoint at the stop")
    assert_identical_everywhere(comm, saved[0], "checkpointed states")
    resumed = distributed(comm, solver, *args, tol=1e-12)
    resumed.load_state_dict(saved[0])
    resumed.fit()
    whole = distributed(comm, solver, *args, tol=1e-12)
    whole.fit()
    same = resumed.model.params.tobytes() == whole.model.params.tobytes()
    assert_all(comm, same and resumed.iterations == whole.iterations, "resumed != uninterrupted")


@pytest.mark.parametrize("solver", ["lbfgs", "cg"])
def test_a_signal_in_the_middle_of_a_line_search_is_agreed_and_resumable(comm, solver):
    """SIGUSR1 arrives on the last rank during its 6th evaluation (inside an iteration): every
    rank finishes that iteration, stops before the next, and the checkpointed state resumes to
    the uninterrupted run bit for bit."""
    args = ("logistic", "breast_cancer", 1e-3, 0.0)
    stop = StopRequest().install()
    saved = []
    try:
        hooks = FitHooks(stop_request=stop, checkpoint=lambda s: saved.append(s.state_dict()))
        stopped = distributed(comm, solver, *args, tol=1e-10, hooks=hooks)
        evaluate, calls = stopped.objective.loss_gradient, []

        def signalled(*a, **kw):
            calls.append(1)
            if len(calls) == 6 and comm.rank == comm.size - 1:
                os.kill(os.getpid(), signal.SIGUSR1)
            return evaluate(*a, **kw)

        stopped.objective.loss_gradient = signalled
        stopped.fit()
    finally:
        stop.uninstall()
    iterations = comm.allgather_int(stopped.iterations)
    assert_all(comm, len(set(iterations.tolist())) == 1, f"iterations {iterations}")
    assert_all(comm, stopped.result.termination == STOPPED, repr(stopped.result))
    assert_all(comm, stopped.stop_reason == "SIGUSR1 (on 1 rank)", str(stopped.stop_reason))
    assert_all(comm, len(saved) == 1, f"{len(saved)} checkpoints")
    resumed = distributed(comm, solver, *args, tol=1e-10)
    resumed.load_state_dict(saved[0])
    resumed.fit()
    whole = distributed(comm, solver, *args, tol=1e-10)
    whole.fit()
    same = resumed.model.params.tobytes() == whole.model.params.tobytes()
    assert_all(comm, same, "the resumed run differs from the uninterrupted one")


@pytest.mark.parametrize("solver", ["lbfgs", "cg", "cholesky"])
def test_a_failure_on_one_rank_raises_on_every_rank(comm, solver):
    faults = FaultInjector(comm.rank, f"raise@{comm.size - 1}:2")
    s = distributed(
        comm, solver, "logistic", "breast_cancer", 1e-3, 0.0, hooks=FitHooks(faults=faults)
    )
    with pytest.raises(PeerFailure, match=f"rank {comm.size - 1}: RuntimeError: injected failure"):
        s.fit()


def test_parameters_that_drift_on_one_rank_are_caught_by_the_digest_check(comm):
    faults = FaultInjector(comm.rank, f"corrupt@{comm.size - 1}:2")
    s = distributed(
        comm,
        "lbfgs",
        "logistic",
        "breast_cancer",
        1e-3,
        0.0,
        hooks=FitHooks(faults=faults),
        check_every=1,
    )
    with pytest.raises(DivergenceError, match="ranks hold different parameters at iteration 3"):
        s.fit()
