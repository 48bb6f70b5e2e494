"""The on-disk formats, one module each, behind one small interface.

Every format is a :class:`Format`: a name, ``read_local`` (this rank's rows, no communication),
``write`` (streaming ``(X, y)`` chunks into a new file or directory), and how its data sets are
laid out on disk. The loader (:mod:`mpi_sgd.data.loader`) dispatches on the name; the data tool
(:mod:`mpi_sgd.data.tool`) writes through ``write``. Optional dependencies (pyarrow for Parquet,
h5py for HDF5) are imported only when such data is read or written; a missing one raises
:class:`~mpi_sgd.data.formats.base.MissingExtra` naming the pip extra.

==========  ===========================================  ============================  ========
name        data set                                     rows of rank r read           extra
==========  ===========================================  ============================  ========
``npy``     directory: ``X.npy``, ``y.npy``              its rows, memory-mapped
``csr``     directory: ``X_data.npy``, ... ``y.npy``     its ``indptr`` slice, nnz
``libsvm``  text file, maybe ``.gz``/``.bz2``/``.xz``    its byte range (compressed:
``csv``     text file, maybe compressed                  every rank decompresses)
``parquet`` file, directory (hive), or glob of files     its rows of the row groups    parquet
``hdf5``    file with ``X`` (2-D or CSR group), ``y``    its hyperslab of rows         hdf5
==========  ===========================================  ============================  ========
"""

from __future__ import annotations

from dataclasses import dataclass

from mpi_sgd.data.formats import csr, hdf5, npy, parquet, textfile
from mpi_sgd.data.formats.base import (
    IMPUTE,
    Chunk,
    LocalRead,
    MissingExtra,
    ReadFunction,
    ReadOptions,
    WriteFunction,
    WriteOptions,
)

__all__ = [
    "FORMATS",
    "IMPUTE",
    "NAMES",
    "Chunk",
    "Format",
    "LocalRead",
    "MissingExtra",
    "ReadOptions",
    "WriteOptions",
    "get",
]


@dataclass(frozen=True)
class Format:
    """One on-disk format.

    Attributes
    ----------
    name : str
        ``npy``, ``csr``, ``libsvm``, ``csv``, ``parquet`` or ``hdf5``.
    read_local : callable
        ``(path, files, rank, size, opts) -> LocalRead``: this rank's rows of the data set at
        ``path`` made of ``files`` (one entry but for Parquet datasets). No communication.
    write : callable
        ``(path, chunks, n_features, wopts) -> None``: write consecutive ``(X, y)`` chunks as a
        new data set at ``path`` (a directory that exists, for ``directory`` formats).
    directory : bool
        A data set is a directory (``npy``, ``csr``) rather than a file.
    suffix : str
        Suffix of the files written (``""`` for directories).
    multi_file : bool
        A directory or glob of such files is one data set split by rows across all files
        (Parquet), not a set of shards assigned whole to ranks.
    extra : str or None
        The pip extra the format needs (``pip install 'mpi_sgd[EXTRA]'``).
    """

    name: str
    read_local: ReadFunction
    write: WriteFunction
    directory: bool = False
    suffix: str = ""
    multi_file: bool = False
    extra: str | None = None


FORMATS: dict[str, Format] = {
    "npy": Format("npy", npy.read_local, npy.write, directory=True),
    "csr": Format("csr", csr.read_local, csr.write, directory=True),
    "libsvm": Format("libsvm", textfile.read_libsvm, textfile.write_libsvm, suffix=".svm"),
    "csv": Format("csv", textfile.read_csv, textfile.write_csv, suffix=".csv"),
    "parquet": Format(
        "parquet",
        parquet.read_local,
        parquet.write,
        suffix=".parquet",
        multi_file=True,
        extra="parquet",
    ),
    "hdf5": Format("hdf5", hdf5.read_local, hdf5.write, suffix=".h5", extra="hdf5"),
}
NAMES = tuple(FORMATS)
"""Every format name, in the order above."""


def get(name: str) -> Format:
    """The format called ``name``; ValueError for an unknown one."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; expected one of {', '.join(NAMES)}") from None
