"""Deterministic synthetic data sets, generated block by block so any row range can be made alone.

Rows are produced in blocks of :data:`BLOCK_ROWS`; block ``b`` of split ``s`` (0 = train, 1 =
test) is drawn from ``default_rng([seed, s, b])`` and the true model from ``default_rng([seed,
7])``. Row ``i`` is therefore the same whichever rank, file or process makes it, so a rank can
generate only its own partition (the built-in default data set) and the data tool can write
files that any number of ranks read back identically.

Kinds
-----
``binary``
    Gaussian features with a few correlated columns; labels in {0, 1} drawn from a logistic model
    whose margin scale gives a Bayes accuracy of about 85%.
``multiclass``
    The same features; labels in {0, ..., K-1} drawn from a softmax of a random linear model.
``regression``
    The same features; ``y = X w + b + noise`` with noise standard deviation ``noise``.
``sparse-binary``
    CSR rows with about ``nnz_per_row`` non-zeros, power-law feature popularity and values
    ``1/sqrt(nnz)``; labels from a logistic model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

BLOCK_ROWS = 4096
KINDS = ("binary", "multiclass", "regression", "sparse-binary")
SPLITS = {"train": 0, "test": 1}
MARGIN_STD = 3.4  # logistic margins of this spread give a Bayes accuracy of about 85%


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the defaults are the built-in data set of ``mpi_sgd.train``.

    ``n_rows`` is the size of the split being read (train or test).
    """

    kind: str = "binary"
    n_train: int = 200_000
    n_test: int = 20_000
    n_features: int = 32
    n_classes: int = 2
    seed: int = 0
    noise: float = 0.5
    nnz_per_row: int = 60
    n_correlated: int = field(default=4)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown synthetic kind {self.kind!r}; expected one of {KINDS}")
        if self.n_features < 1 or self.n_train < 0 or self.n_test < 0:
            raise ValueError("synthetic sizes must be non-negative (features >= 1)")
        if self.seed < 0:
            raise ValueError(f"synthetic seed must be >= 0, got {self.seed}")
        if self.nnz_per_row < 1 or self.noise < 0:
            raise ValueError("synthetic nnz must be >= 1 and noise >= 0")
        if self.kind == "multiclass" and self.n_classes < 2:
            raise ValueError("a multiclass data set needs n_classes >= 2")

    @property
    def is_sparse(self) -> bool:
        """True for the CSR kind."""
        return self.kind == "sparse-binary"

    def n_rows(self, split: str) -> int:
        """Rows in ``split`` ('train' or 'test')."""
        return self.n_train if split == "train" else self.n_test


def true_model(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """The generating coefficients, shape (n_outputs, n_features), and intercepts (n_outputs,)."""
    rng = np.random.default_rng([spec.seed, 7])
    d = spec.n_features
    k = spec.n_classes if spec.kind == "multiclass" else 1
    coef = rng.standard_normal((k, d))
    if spec.kind == "sparse-binary":
        coef *= 4.0
    else:
        # Scale each output so its score has standard deviation MARGIN_STD (classification: a
        # Bayes accuracy of about 85% for binary) or 1 (regression), given the feature covariance.
        cov = feature_covariance(spec)
        target = 1.0 if spec.kind == "regression" else MARGIN_STD
        coef *= target / np.sqrt(np.einsum("kd,de,ke->k", coef, cov, coef))[:, None]
    intercept = 0.1 * rng.standard_normal(k)
    return coef, intercept


def feature_covariance(spec: SyntheticSpec) -> np.ndarray:
    """Covariance (n_features, n_features) of the dense kinds' features."""
    d = spec.n_features
    c = min(spec.n_correlated, d // 2)
    cov = np.eye(d)
    for j in range(c):
        # column d-c+j = 0.8 * column j + 0.6 * noise: unit variance, correlation 0.8
        cov[j, d - c + j] = cov[d - c + j, j] = 0.8
    return cov


def _dense_block(spec: SyntheticSpec, rng: np.random.Generator, m: int) -> np.ndarray:
    X = rng.standard_normal((m, spec.n_features))
    c = min(spec.n_correlated, spec.n_features // 2)
    if c:
        # A few columns correlated with the first ones, as real features often are.
        X[:, -c:] = 0.8 * X[:, :c] + 0.6 * X[:, -c:]
    return X


def _sparse_block(spec: SyntheticSpec, rng: np.random.Generator, m: int) -> sp.csr_matrix:
    d = spec.n_features
    nnz = np.clip(rng.poisson(spec.nnz_per_row, size=m), 1, d)
    indptr = np.concatenate([[0], np.cumsum(nnz)]).astype(np.int64)
    # Power-law popularity: feature ranks drawn from a Zipf-like law, folded into [0, d).
    raw = (rng.pareto(1.1, size=int(indptr[-1])) * (d / 50.0)).astype(np.int64) % d
    indices = np.empty_like(raw, dtype=np.int32)
    data = np.empty(raw.size, dtype=np.float64)
    for i in range(m):
        a, b = indptr[i], indptr[i + 1]
        cols = np.unique(raw[a:b])
        n = cols.size
        indices[a : a + n] = cols
        data[a : a + n] = 1.0 / np.sqrt(n)
        nnz[i] = n
    # Rows may have lost duplicates: compact.
    keep: np.ndarray | list[int] = (
        np.concatenate([np.arange(indptr[i], indptr[i] + nnz[i]) for i in range(m)]) if m else []
    )
    new_indptr = np.concatenate([[0], np.cumsum(nnz)]).astype(np.int64)
    return sp.csr_matrix((data[keep], indices[keep], new_indptr), shape=(m, d))


def _labels(spec: SyntheticSpec, rng: np.random.Generator, scores: np.ndarray) -> np.ndarray:
    if spec.kind == "regression":
        return scores[:, 0] + spec.noise * rng.standard_normal(scores.shape[0])
    if spec.kind == "multiclass":
        z = scores - scores.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random((scores.shape[0], 1))
        return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), spec.n_classes - 1).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
    return (rng.random(scores.shape[0]) < p).astype(np.float64)


def generate_block(
    spec: SyntheticSpec, split: str, block: int
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """Block ``block`` of ``split``: ``(X, y)`` with X dense (m, d) or CSR, y float64 (m,)."""
    n = spec.n_rows(split)
    start = block * BLOCK_ROWS
    m = max(0, min(BLOCK_ROWS, n - start))
    rng = np.random.default_rng([spec.seed, SPLITS[split], block])
    X = _sparse_block(spec, rng, m) if spec.is_sparse else _dense_block(spec, rng, m)
    coef, intercept = true_model(spec)
    scores = np.asarray(X @ coef.T) + intercept
    return X, _labels(spec, rng, scores)


def generate_rows(
    spec: SyntheticSpec, split: str, start: int, stop: int
) -> tuple[object, np.ndarray]:
    """Rows ``[start, stop)`` of ``split``, generating only the blocks they touch."""
    n = spec.n_rows(split)
    if not 0 <= start <= stop <= n:
        raise ValueError(f"rows [{start}, {stop}) are outside [0, {n})")
    Xs, ys = [], []
    for block in range(start // BLOCK_ROWS, -(-stop // BLOCK_ROWS)):
        X, y = generate_block(spec, split, block)
        a = max(start - block * BLOCK_ROWS, 0)
        b = min(stop - block * BLOCK_ROWS, BLOCK_ROWS)
        Xs.append(X[a:b])
        ys.append(y[a:b])
    if not Xs:
        empty = (
            sp.csr_matrix((0, spec.n_features))
            if spec.is_sparse
            else np.empty((0, spec.n_features))
        )
        return empty, np.empty(0)
    X_out = sp.vstack(Xs, format="csr") if spec.is_sparse else np.concatenate(Xs)
    return X_out, np.concatenate(ys)


def parse_synthetic(text: str) -> SyntheticSpec:
    """Parse ``synthetic:KIND[,key=value...]`` (keys: rows, test_rows, features, classes, seed,
    noise, nnz), e.g. ``synthetic:multiclass,rows=50000,classes=5``."""
    body = text.split(":", 1)[1] if ":" in text else ""
    parts = [p.strip() for p in body.split(",") if p.strip()]
    kind = parts[0] if parts and "=" not in parts[0] else "binary"
    names = {
        "rows": "n_train",
        "test_rows": "n_test",
        "features": "n_features",
        "classes": "n_classes",
        "seed": "seed",
        "noise": "noise",
        "nnz": "nnz_per_row",
    }
    kwargs: dict[str, object] = {"kind": kind}
    if kind == "multiclass":
        kwargs["n_classes"] = 5
    if kind == "sparse-binary":
        kwargs["n_features"] = 2**14
    for part in parts:
        if "=" not in part:
            if part != kind:
                raise ValueError(f"bad synthetic option {part!r} in {text!r}")
            continue
        key, _, value = part.partition("=")
        if key not in names:
            raise ValueError(
                f"unknown synthetic option {key!r} in {text!r}; known: {sorted(names)}"
            )
        kwargs[names[key]] = float(value) if key == "noise" else int(value)
    return SyntheticSpec(**kwargs)  # type: ignore[arg-type]
