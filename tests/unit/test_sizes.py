"""Serial tests of :mod:`mpi_sgd.data.sizes`: the memory estimate and the refusal it drives."""

from __future__ import annotations

import pytest

from mpi_sgd.comm import Communicator
from mpi_sgd.data import sizes
from mpi_sgd.errors import ConfigError, DataError


def test_model_bytes_formula() -> None:
    assert sizes.model_bytes(10, 1, True) == 6 * 8 * 11
    assert sizes.model_bytes(10, 3, False) == 6 * 8 * 30
    assert sizes.model_bytes(9 * 10**12) == 48 * (9 * 10**12 + 1)  # exact, no overflow


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (72 * 10**12, "65.5 TiB"), (2**30, "1 GiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert sizes.human_bytes(n) == text


def test_physical_and_agreed_memory() -> None:
    mine = sizes.physical_memory()
    assert mine is None or mine > 2**20
    agreed = sizes.agreed_memory(Communicator.serial())
    assert agreed == (mine if mine is not None else sizes.UNKNOWN_MEMORY)


def test_size_problem_and_check() -> None:
    assert sizes.size_problem(100, 1, True, 10**6) is None
    assert sizes.size_problem(10**13, 5, True, 0) is None  # unknown memory: never refuses
    problem = sizes.size_problem(9 * 10**12, 1, True, 2**40)
    assert problem is not None and "393 TiB" in problem and "1 TiB of physical memory" in problem
    with pytest.raises(DataError) as err:
        sizes.check_model_size(9 * 10**12, 1, True, 2**40, source="f.svm line 3")
    assert str(err.value).startswith(
        "f.svm line 3: a model 9,000,000,000,000 features wide needs at least 393 TiB per rank"
    )
    assert "--n-features" in str(err.value) and err.value.collective
    with pytest.raises(ConfigError) as cfg:
        sizes.check_model_size(
            10**9, 10, True, 2**30, source="--n-features 1000000000", error=ConfigError
        )
    assert "with 10 outputs" in str(cfg.value) and cfg.value.exit_code == 2
    sizes.check_model_size(1000, 10, True, 2**30, source="x")  # fits: no error
