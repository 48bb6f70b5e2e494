"""``--config FILE`` when the ranks do not see the same file: every rank fails alike, at once.

Each rank works in a directory of its own and passes the same relative path, as ranks on
nodes with different local files would.
"""

from __future__ import annotations

import os

import pytest

from mpi_sgd.cli.common import resolve_config_file
from mpi_sgd.cli.train import build_parser
from mpi_sgd.comm import Communicator
from mpi_sgd.errors import ConfigError, PeerFailure
from mpi_sgd.options import TRAIN_OPTIONS
from tests.mpi.conftest import assert_all


def _resolve(comm: Communicator, directory: str, text: str | None):
    """Resolve ``--config run.toml --lr 0.2`` in this rank's own subdirectory of
    ``directory`` (``text`` written there)."""
    directory = os.path.join(directory, f"rank-{comm.rank}")
    os.makedirs(directory)
    if text is not None:
        with open(os.path.join(directory, "run.toml"), "w") as fh:
            fh.write(text)
    argv = ["--config", "run.toml", "--lr", "0.2"]
    parser = build_parser(quiet=True)
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        return resolve_config_file(parser, argv, parser.parse_args(argv), TRAIN_OPTIONS, comm)
    finally:
        os.chdir(cwd)


@pytest.mark.mpi(min_size=2)
def test_ranks_reading_different_contents_fail_together_naming_the_groups(comm, tmp_path):
    epochs = 3 if comm.rank == comm.size - 1 else 2
    with pytest.raises(ConfigError) as info:
        _resolve(comm, str(tmp_path), f"[training]\nepochs = {epochs}\n")
    last = comm.size - 1
    message = str(info.value)
    assert_all(comm, info.value.collective, "raised on every rank alike")
    assert_all(comm, "the ranks read different options from --config run.toml" in message)
    assert_all(comm, f"rank(s) {list(range(last))} vs rank(s) [{last}]" in message, message)


@pytest.mark.mpi(min_size=2)
def test_a_file_missing_on_one_rank_fails_every_rank_naming_it(comm, tmp_path):
    text = None if comm.rank == 1 else "[training]\nepochs = 2\n"
    with pytest.raises(PeerFailure) as info:
        _resolve(comm, str(tmp_path), text)
    assert_all(comm, info.value.exit_code == 2 and info.value.rank == 1, str(info.value))
    assert_all(comm, "--config run.toml: cannot read it" in str(info.value), str(info.value))


@pytest.mark.mpi(min_size=2)
def test_the_same_file_everywhere_resolves_alike(comm, tmp_path):
    values = vars(_resolve(comm, str(tmp_path), "[training]\nepochs = 2\n[optimiser]\nlr = 1\n"))
    assert_all(comm, values["epochs"] == 2 and values["lr"] == 0.2, str(values))
