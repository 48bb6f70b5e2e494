"""Serial tests of compressed LIBSVM/CSV (issue 13): files compressed by Python's gzip, bz2 and
lzma modules, read by every rank of several (each decompressing the stream and keeping only its
lines), compared with scikit-learn's ``load_svmlight_file`` and numpy on the plain text."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_breast_cancer, load_svmlight_file

from mpi_sgd.comm import Communicator
from mpi_sgd.data.formats import compression, textfile
from mpi_sgd.data.loader import ReadOptions, describe_source, load_dataset
from mpi_sgd.data.partition import block_range
from mpi_sgd.errors import MpiSgdError

OPENERS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}


@pytest.fixture(scope="module")
def comm() -> Communicator:
    return Communicator.serial()


@contextmanager
def fails(code: int, match: str) -> Iterator[None]:
    with pytest.raises(MpiSgdError, match=match) as err:
        yield
    assert err.value.exit_code == code, err.value


def svm_bytes() -> tuple[bytes, np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    buf = io.BytesIO()
    dump_svmlight_file(X, y, buf, zero_based=False, comment="breast cancer, one-based")
    return buf.getvalue(), X, y.astype(float)


def compress(path: Path, data: bytes, codec: str) -> Path:
    with OPENERS[codec](path, "wb") as fh:
        fh.write(data)
    return path


@pytest.mark.parametrize("codec", sorted(OPENERS))
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_every_rank_keeps_only_its_lines(tmp_path, codec, size, monkeypatch):
    monkeypatch.setattr(compression, "CHUNK", 4099)  # many decompressed chunks per rank
    data, X, y = svm_bytes()
    path = compress(tmp_path / f"bc.svm.{codec}", data, codec)
    n_lines = data.count(b"\n")
    comments = sum(line.startswith(b"#") for line in data.splitlines())
    parts = [
        textfile.read_libsvm(str(path), [str(path)], r, size, ReadOptions()) for r in range(size)
    ]
    for r, part in enumerate(parts):
        a, b = block_range(n_lines, r, size)
        assert part.segments == [(r, part.y.shape[0])] and part.n_segments == size
        # the comment lines at the start belong to rank 0's block and are no rows
        assert part.y.shape[0] == b - a - (comments if r == 0 else 0)
        assert "every rank decompresses it" in part.note
    got = sp.vstack([sp.csr_matrix(p.X, shape=(p.X.shape[0], 31)) for p in parts]).toarray()
    np.testing.assert_array_equal(got[:, 1:], X)
    np.testing.assert_array_equal(np.concatenate([p.y for p in parts]), y)


@pytest.mark.parametrize("codec", sorted(OPENERS))
def test_the_loader_matches_sklearn_on_the_plain_text(tmp_path, comm, codec):
    data, _, _ = svm_bytes()
    plain = tmp_path / "bc.svm"
    plain.write_bytes(data)
    X_ref, y_ref = load_svmlight_file(str(plain), zero_based=False)
    path = compress(tmp_path / f"a9a.{codec}", data, codec)  # no format suffix: sniffed
    assert describe_source(str(path)) == ("libsvm", [str(path)])
    got = load_dataset(str(path), comm, ReadOptions(n_features=30))
    np.testing.assert_array_equal(got.X.toarray(), X_ref.toarray())
    np.testing.assert_array_equal(got.y, y_ref)
    assert got.source_note.startswith(f" (libsvm, {compression.SUFFIXES['.' + codec]} stream")


def test_compressed_csv_with_a_header(tmp_path, comm):
    X, y = load_breast_cancer(return_X_y=True)
    text = io.StringIO()
    np.savetxt(
        text,
        np.column_stack([y, X]),
        delimiter=",",
        header="label," + ",".join(f"f{j}" for j in range(30)),
        comments="",
        fmt="%.17g",
    )
    path = compress(tmp_path / "bc.csv.gz", text.getvalue().encode(), "gz")
    for size in (1, 3):
        parts = [
            textfile.read_csv(str(path), [str(path)], r, size, ReadOptions()) for r in range(size)
        ]
        np.testing.assert_array_equal(np.concatenate([p.X for p in parts]), X)
        np.testing.assert_array_equal(np.concatenate([p.y for p in parts]), y)
    assert load_dataset(str(path), comm).source_note.startswith(" (csv, gzip stream")


@pytest.mark.parametrize("size", [1, 2, 3])
def test_errors_name_the_line_of_the_file_whichever_rank_reads_it(tmp_path, size):
    lines = [f"{i % 2} 1:{i}.5 3:1" for i in range(30)]
    lines[22] = "1 1:0.5 3:oops"
    path = compress(tmp_path / "bad.svm.gz", ("\n".join(lines) + "\n").encode(), "gz")
    errors = []
    for r in range(size):
        try:
            textfile.read_libsvm(str(path), [str(path)], r, size, ReadOptions())
        except MpiSgdError as exc:
            errors.append(str(exc))
    assert errors == [
        "bad.svm.gz line 23: cannot parse '3:oops' as index:value".join([str(tmp_path) + "/", ""])
    ]


def test_index_zero_is_located_in_the_stream(tmp_path, comm):
    lines = [f"1 {1 + i % 3}:1" for i in range(40)]
    lines[31] = "0 0:2"
    path = compress(tmp_path / "z.svm.bz2", ("\n".join(lines)).encode(), "bz2")
    with fails(3, r"z.svm.bz2 line 32: feature index 0 in a file read as one-based"):
        load_dataset(str(path), comm, ReadOptions(index_base=1))


@pytest.mark.parametrize("codec", sorted(OPENERS))
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_streams_are_refused_naming_file_and_codec(tmp_path, comm, codec, damage):
    data, _, _ = svm_bytes()
    path = compress(tmp_path / f"bc.svm.{codec}", data, codec)
    raw = path.read_bytes()
    if damage == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    else:
        k = len(raw) // 2
        raw = raw[:k] + bytes(b ^ 0x55 for b in raw[k : k + 64]) + raw[k + 64 :]
    path.write_bytes(raw)
    name = compression.SUFFIXES["." + codec]
    with fails(3, rf"bc.svm.{codec}: the {name} stream is (truncated|corrupt)"):
        load_dataset(str(path), comm)


def test_an_unsupported_compression_is_named(tmp_path, comm):
    path = tmp_path / "data.svm.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    with fails(3, r"is zstd-compressed, which mpi_sgd cannot read"):
        load_dataset(str(path), comm)


def test_compressed_shards_are_read_whole_by_their_ranks(tmp_path, comm):
    data, X, _ = svm_bytes()
    lines = [line for line in data.splitlines(keepends=True) if not line.startswith(b"#")]
    d = tmp_path / "shards"
    d.mkdir()
    for k, codec in enumerate(["gz", "bz2", "xz"]):
        a, b = block_range(len(lines), k, 3)
        compress(d / f"part-{k:05d}.svm.{codec}", b"".join(lines[a:b]), codec)
    kind, files = describe_source(str(d))
    assert kind == "libsvm" and len(files) == 3
    got = load_dataset(str(d), comm, ReadOptions(n_features=30))
    np.testing.assert_array_equal(got.X.toarray(), X)
    assert "shards: whole files per rank" in got.source_note


def test_read_lines_cuts_any_line_range_at_any_chunk_size(tmp_path, monkeypatch):
    rng = random.Random(1)
    path = tmp_path / "t.gz"
    for _ in range(60):
        n = rng.randint(0, 30)
        lines = [b"x" * rng.randint(0, 12) for _ in range(n)]
        data = b"\n".join(lines) + (b"\n" if n and rng.random() < 0.5 else b"")
        compress(path, data, "gz")
        monkeypatch.setattr(compression, "CHUNK", rng.randint(1, 40))
        whole = data.splitlines(keepends=True)
        assert compression.count_lines(str(path), "gzip") == len(whole)
        for _ in range(4):
            a = rng.randint(0, n + 1)
            b = rng.choice([None, rng.randint(a, n + 2)])
            assert compression.read_lines(str(path), "gzip", a, b) == b"".join(whole[a:b])


def test_gzip_output_is_deterministic(tmp_path):
    for name in ("a.gz", "b.gz"):
        with compression.open_write(str(tmp_path / name), "gzip") as fh:
            fh.write(b"1 1:2\n")
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == b"1 1:2\n"
