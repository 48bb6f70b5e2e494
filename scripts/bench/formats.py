"""Load time and peak memory per rank of W1 (dense) and W2 (sparse) from every data format.

Usage::

    python scripts/bench/formats.py [--scale 1] [--w2-scale 1] [--ranks 2] [--reps 2]
                                    [--root /tmp/mpi_sgd-bench-formats] [--out docs/benchmarks.md]

Makes the workloads with ``python -m mpi_sgd.datasets workload`` (npy for W1, CSR for W2),
converts them with ``mpiexec -n R python -m mpi_sgd.datasets convert`` into each format (timed:
the conversion figures are those of the data tool under mpiexec), then launches, for each format
and repetition, ``mpiexec -n R python scripts/bench/formats.py load PATH``: every rank imports
the format's library, then times :func:`mpi_sgd.data.loader.load_dataset` (the trainer's
loader: each rank reads only its own rows, checks them for NaN/inf, and the ranks agree on the
facts) and reports its peak resident set (``ru_maxrss``), its resident set before loading, and
the bytes of its share (``X`` and ``y`` as loaded). Files are read from a warm page cache (they
were just written), so the figures are the readers' CPU cost, not the disk's.

The section it writes into ``--out`` lies between ``<!-- formats:begin -->`` and
``<!-- formats:end -->`` (replaced on each run; ``scripts/bench/run.py`` keeps it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BEGIN, END = "<!-- formats:begin -->", "<!-- formats:end -->"

# (label, convert flags; None: the workload's own files); W1 is dense, W2 sparse.
W1_FORMATS = [
    ("npy (memory-mapped)", None),
    ("parquet (snappy)", ["--format", "parquet"]),
    ("parquet (zstd)", ["--format", "parquet", "--compress", "zstd"]),
    ("hdf5 (chunked)", ["--format", "hdf5"]),
    ("hdf5 (chunked, gzip)", ["--format", "hdf5", "--compress", "gzip"]),
    ("csv", ["--format", "csv"]),
    ("csv.gz (one stream)", ["--format", "csv", "--compress", "gzip"]),
    ("csv.gz (8 shards)", ["--format", "csv", "--compress", "gzip", "--shards", "8"]),
]
W2_FORMATS = [
    ("csr (memory-mapped)", None),
    ("hdf5 CSR (chunked)", ["--format", "hdf5"]),
    ("hdf5 CSR (chunked, gzip)", ["--format", "hdf5", "--compress", "gzip"]),
    ("libsvm", ["--format", "libsvm"]),
    ("libsvm.gz (one stream)", ["--format", "libsvm", "--compress", "gzip"]),
    ("libsvm.bz2 (one stream)", ["--format", "libsvm", "--compress", "bz2"]),
    ("libsvm.gz (8 shards)", ["--format", "libsvm", "--compress", "gzip", "--shards", "8"]),
]
IMPORTS = {"parquet": ("pyarrow.parquet", "pyarrow.compute"), "hdf5": ("h5py",)}


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out["PYTHONPATH"] = ROOT + os.pathsep + out.get("PYTHONPATH", "")
    return out


def mpiexec() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec") or "mpiexec"


def run(cmd: list[str], timeout: float) -> tuple[float, str]:
    """Run ``cmd``; its wall time and stdout. Raises on failure or timeout."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


def du(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path) for f in files)


# ------------------------------------------------------------------------------ the child
def load_main(argv: list[str]) -> None:
    """``formats.py load PATH [--n-features D]``, under mpiexec: one JSON line from rank 0."""
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--n-features", type=int)
    a = p.parse_args(argv)
    import numpy as np
    import scipy.sparse as sp

    from mpi_sgd.comm import Communicator
    from mpi_sgd.data.loader import ReadOptions, describe_source, load_dataset

    comm = Communicator()
    kind, _ = describe_source(a.path)
    t0 = time.perf_counter()
    for module in IMPORTS.get(kind, ()):
        __import__(module)
    imported = time.perf_counter() - t0
    comm.barrier()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    opts = ReadOptions(n_features=a.n_features, index_base=1 if a.n_features else None)
    data = load_dataset(a.path, comm, opts)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    X = data.X
    share = (
        X.data.nbytes + X.indices.nbytes + X.indptr.nbytes if sp.issparse(X) else X.nbytes
    ) + data.y.nbytes
    mine = np.array([seconds, imported, before, peak, share, data.n_local], dtype=np.float64)
    rows = comm.allgather_floats(mine)
    if comm.is_root:
        print(
            json.dumps(
                {
                    "seconds": [float(r[0]) for r in rows],
                    "import": [float(r[1]) for r in rows],
                    "rss_before": [float(r[2]) for r in rows],
                    "rss_peak": [float(r[3]) for r in rows],
                    "share": [float(r[4]) for r in rows],
                    "rows": [int(r[5]) for r in rows],
                    "note": data.source_note,
                }
            )
        )


# ----------------------------------------------------------------------------- the driver
def prepare(name: str, scale: float, root: str, ranks: int, timeout: float) -> list[dict]:
    """Make workload ``name`` and its conversions; one entry per format."""
    base = os.path.join(root, f"{name}-{scale:g}")
    made = os.path.join(base, "made")
    if not os.path.exists(os.path.join(made, "dataset.json")):
        cmd = [sys.executable, "-m", "mpi_sgd.datasets", "workload", name, "--scale", repr(scale)]
        run([*cmd, "--out", made], timeout)
    source = os.path.join(made, "train")
    entries = []
    for label, flags in W1_FORMATS if name == "W1" else W2_FORMATS:
        entry: dict = {"format": label, "path": source, "convert_s": None}
        if flags is not None:
            slug = "".join(c if c.isalnum() else "_" for c in label).strip("_")
            out = os.path.join(base, slug)
            if not os.path.exists(out):
                entry["convert_s"] = convert(source, out, flags, ranks, timeout)
            entry["path"] = out
        entry["bytes"] = du(entry["path"])
        entries.append(entry)
    return entries


def convert(source: str, out: str, flags: list[str], ranks: int, timeout: float) -> float:
    """Convert ``source`` to ``out``; the seconds it took.

    Shard sets and binary formats: ``convert`` as given (one process for a single file). A
    single text file: ``ranks`` processes convert a shard each, concatenated in order into one
    file (a valid single gzip/bzip2 stream of members; CSV without a header line).
    """
    tool = [sys.executable, "-m", "mpi_sgd.datasets", "convert", source]
    fmt = flags[flags.index("--format") + 1]
    if "--shards" in flags or fmt not in ("csv", "libsvm"):
        n = ranks if "--shards" in flags else 1
        seconds, _ = run([mpiexec(), "-n", str(n), *tool, out, *flags], timeout)
        return seconds
    parts = out + ".parts"
    extra = ["--no-header"] if fmt == "csv" else []
    cmd = [mpiexec(), "-n", str(ranks), *tool, parts, *flags, *extra]
    seconds, _ = run(cmd, timeout)
    t0 = time.perf_counter()
    with open(out, "wb") as dst:
        for name in sorted(os.listdir(parts)):
            with open(os.path.join(parts, name), "rb") as src:
                shutil.copyfileobj(src, dst, 2**22)
    shutil.rmtree(parts)
    return seconds + time.perf_counter() - t0


def measure(entry: dict, n_features: int | None, ranks: int, reps: int, timeout: float) -> None:
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "load"]
    cmd.append(entry["path"])
    if n_features is not None and ("libsvm" in entry["format"]):
        cmd += ["--n-features", str(n_features)]
    results = []
    for _ in range(reps):
        _, out = run(cmd, timeout)
        results.append(json.loads(out.strip().splitlines()[-1]))
    best = min(results, key=lambda r: max(r["seconds"]))
    entry.update(best)


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def table(name: str, entries: list[dict], ranks: int) -> list[str]:
    lines = [
        f"| {name} format | on disk MiB | convert s | load s, per rank | import s | "
        "peak RSS MiB, per rank | its share MiB | peak − share MiB |",
        "|---|---:|---:|---|---:|---|---|---|",
    ]
    for e in entries:
        per = " / ".join(f"{s:.2f}" for s in e["seconds"])
        rss = " / ".join(mib(r) for r in e["rss_peak"])
        share = " / ".join(mib(s) for s in e["share"])
        over = " / ".join(mib(r - s) for r, s in zip(e["rss_peak"], e["share"], strict=True))
        conv = f"{e['convert_s']:.1f}" if e["convert_s"] is not None else "(made)"
        lines.append(
            f"| {e['format']} | {mib(e['bytes'])} | {conv} | {per} | {max(e['import']):.2f} | "
            f"{rss} | {share} | {over} |"
        )
    return lines


def render(info: dict, results: dict[str, list[dict]]) -> str:
    out = [
        BEGIN,
        "## Loading from each data format (issue 13)",
        "",
        f"Measured by `{info['command']}` on {info['date']}; {info['machine']}; "
        f"{info['minutes']:.1f} minutes; load average (1/5/15 min) {info['load'][0]} before, "
        f"{info['load'][1]} after (a shared machine: the seconds vary between runs by up to "
        "2x; compare formats within a run). Per rank of `mpiexec -n {info['ranks']}`, best of "
        f"{info['reps']} launches (by the slower rank): `load s` is "
        "`mpi_sgd.data.loader.load_dataset` (each rank reads only its rows, checks them for "
        "NaN/inf, the ranks agree on counts and width), after the format's library was imported "
        "(`import s`, paid once per process); `peak RSS` is the rank's `ru_maxrss` after "
        "loading, which includes the interpreter, numpy, scipy, mpi4py and the format's library "
        "(the `peak − share` column); `its share` is the bytes of the rank's `X` and `y` as "
        "loaded. Files come from a warm page cache (just written), so these are the readers' "
        "CPU costs. `convert s` is `mpiexec -n "
        f"{info['ranks']} python -m mpi_sgd.datasets convert` from the npy/CSR files.",
        "",
    ]
    for name, entries in results.items():
        scale = info["scales"][name]
        rows = sum(entries[0]["rows"])
        out.append(
            f"**{name}** at scale {scale:g} ({rows:,} training rows"
            + (", reduced from the full size" if scale < 1 else "")
            + "):"
        )
        out.append("")
        out.extend(table(name, entries, info["ranks"]))
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def write_section(path: str, text: str) -> None:
    """Replace the marked section of ``path`` (or append it)."""
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(new)


def main(argv: list[str]) -> int:
    if argv[:1] == ["load"]:
        load_main(argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="W1 row scale (default 1)")
    p.add_argument("--w2-scale", type=float, default=1.0, help="W2 row scale (default 1)")
    p.add_argument("--workloads", default="W1,W2")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--root", default=os.path.join("/tmp", "mpi_sgd-bench-formats"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--keep", action="store_true", help="keep the data under --root")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    load_before = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[str, list[dict]] = {}
    scales = {"W1": a.scale, "W2": a.w2_scale}
    for name in a.workloads.split(","):
        entries = prepare(name, scales[name], a.root, a.ranks, a.timeout)
        for entry in entries:
            measure(entry, 2**18 if name == "W2" else None, a.ranks, a.reps, a.timeout)
            print(json.dumps({k: v for k, v in entry.items() if k != "path"}), flush=True)
        results[name] = entries
    info = {
        "command": "python scripts/bench/formats.py " + " ".join(argv),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}",
        "minutes": (time.perf_counter() - t0) / 60,
        "ranks": a.ranks,
        "reps": a.reps,
        "scales": scales,
        "load": (load_before, " / ".join(f"{x:.2f}" for x in os.getloadavg())),
    }
    write_section(a.out, render(info, results))
    if not a.keep:
        shutil.rmtree(a.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
