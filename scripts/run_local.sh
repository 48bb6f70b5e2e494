#!/bin/bash
# A small end-to-end example on one machine: write a synthetic data set as CSV and as LIBSVM
# with the data tool, then train on each with 2 MPI ranks.
#
#   scripts/run_local.sh                      # data and results in ${TMPDIR:-/tmp}/mpi_sgd-example
#   WORKDIR=example NP=3 scripts/run_local.sh
#
# With Open MPI as root, set OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1, and use
# MPIEXEC="mpiexec --oversubscribe" for more ranks than cores.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/mpi_sgd-example}
NP=${NP:-2}
PYTHON=${PYTHON:-python}
read -r -a MPIEXEC <<< "${MPIEXEC:-mpiexec}"

# Use this checkout even if mpi_sgd is not installed (harmless if it is: same code).
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$WORKDIR"
cd "$WORKDIR"

# 1. Data: 20,000 training and 2,000 test rows, 20 features, binary labels.
"$PYTHON" -m mpi_sgd.datasets make --kind binary --rows 20000 --test-rows 2000 \
    --features 20 --format csv --out data-csv
"$PYTHON" -m mpi_sgd.datasets make --kind binary --rows 20000 --test-rows 2000 \
    --features 20 --format libsvm --out data-svm

# 2. Train logistic regression on the CSV files: each rank parses its own byte range.
"${MPIEXEC[@]}" -n "$NP" "$PYTHON" -m mpi_sgd.train \
    --train data-csv/train.csv --test data-csv/test.csv \
    --epochs 5 --batch-size 512 --lr 0.2 \
    --output run-csv --metrics run-csv/metrics.jsonl

# 3. The same rows as LIBSVM (sparse, one-based indices), as a linear SVM with an L2 penalty.
"${MPIEXEC[@]}" -n "$NP" "$PYTHON" -m mpi_sgd.train \
    --train data-svm/train.svm --test data-svm/test.svm \
    --model hinge --l2 1e-4 --epochs 5 --batch-size 512 \
    --output run-svm --metrics run-svm/metrics.jsonl

# 4. Use the saved model.
"$PYTHON" - <<'EOF'
import numpy as np

import mpi_sgd

m = mpi_sgd.load_model("run-csv")
test = np.loadtxt("data-csv/test.csv", delimiter=",", skiprows=1)
X, y = test[:, 1:], test[:, 0]
print(f"run-csv: coef {m.coef_.shape}, test accuracy {m.score(X, y):.4f}")
print("P(y=1) of the first 3 test rows:", np.round(m.predict_proba(X[:3])[:, 1], 3))
EOF

echo "data and results in $WORKDIR"
