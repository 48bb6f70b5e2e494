#!/bin/bash
# Train with mpi_sgd under Slurm:   sbatch scripts/slurm_train.sh
#
# Resources are the #SBATCH lines below (options given to sbatch on the command line override
# them). Run settings are the variables in the "run settings" block; each can also be set at
# submission without editing this file, e.g.
#   TRAIN=data/W1/train TEST=data/W1/test EPOCHS=20 sbatch scripts/slurm_train.sh
# (sbatch passes the submitting environment to the job by default).
#
#SBATCH --job-name=mpi_sgd
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpi_sgd-%j.out
#SBATCH --open-mode=append      # a requeued run appends to the same log
#SBATCH --signal=B:USR1@120     # warn this script 120 s before the time limit...
#SBATCH --requeue               # ...so the run checkpoints, exits 75 and is requeued here
# Site-specific, uncomment as needed:
##SBATCH --partition=compute
##SBATCH --account=myproject
##SBATCH --mem-per-cpu=4G

set -euo pipefail

# Slurm starts the script in the submit directory already; be explicit for relative paths.
cd "${SLURM_SUBMIT_DIR:-.}"

# ---- run settings ---------------------------------------------------------------------------
TRAIN=${TRAIN:-synthetic:binary}   # your data, e.g. data/W1/train (see docs/data.md)
TEST=${TEST:-}                     # empty: none (a synthetic TRAIN evaluates its own test split)
MODEL=${MODEL:-logistic}           # logistic | softmax | hinge | squared
EPOCHS=${EPOCHS:-10}
BATCH_SIZE=${BATCH_SIZE:-256}      # global batch: rows per step summed over all ranks
OUTPUT=${OUTPUT:-runs/mpi_sgd-${SLURM_JOB_ID:-local}}
TRAIN_ARGS=${TRAIN_ARGS:-}         # more mpi_sgd.train flags, e.g. "--optimizer adam --lr 0.01"
CHECKPOINT_DIR=${CHECKPOINT_DIR:-$OUTPUT/checkpoints}  # on a file system every node sees
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}  # also checkpoint every N steps (0: epochs only)
MAX_REQUEUES=${MAX_REQUEUES:-20}   # stop requeueing after this many restarts
VENV=${VENV:-.venv}                # activated if it exists
PYTHON=${PYTHON:-python}

# What Slurm granted (edit the #SBATCH lines to change it).
NODES=${SLURM_JOB_NUM_NODES:-1}
TASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-1}}
NTASKS=${SLURM_NTASKS:-1}
TIME_LIMIT=$(squeue -h -j "${SLURM_JOB_ID:-0}" -o %l 2>/dev/null || true)
THREADS=${SLURM_CPUS_PER_TASK:-1}

# ---- environment ----------------------------------------------------------------------------
# Load the MPI that mpi4py was built against (see docs/usage.md), e.g.:
# module load openmpi
if [ -f "$VENV/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
fi

# One BLAS/OpenMP thread per core given to each rank: ranks x threads <= cores.
export OMP_NUM_THREADS=$THREADS
export OPENBLAS_NUM_THREADS=$THREADS
export MKL_NUM_THREADS=$THREADS
export BLIS_NUM_THREADS=$THREADS
export NUMEXPR_NUM_THREADS=$THREADS
# Slurm >= 22.05: srun no longer inherits --cpus-per-task from the allocation.
export SRUN_CPUS_PER_TASK=$THREADS

mkdir -p "$OUTPUT"

args=(
    --train "$TRAIN"
    --model "$MODEL"
    --epochs "$EPOCHS"
    --batch-size "$BATCH_SIZE"
    --output "$OUTPUT"
    --metrics "$OUTPUT/metrics.jsonl"
    --blas-threads "$THREADS"
)
if [ -n "$TEST" ]; then
    args+=(--test "$TEST")
fi
extra=()
if [ -n "$TRAIN_ARGS" ]; then
    read -r -a extra <<< "$TRAIN_ARGS"
fi

# ==== checkpoint / resume / requeue ===========================================================
# --resume continues from the newest valid checkpoint (or starts fresh the first time), so the
# same script serves the first run and every requeued one. On SIGUSR1 (the --signal warning
# above) or SIGTERM (preemption), every rank finishes its step, writes a checkpoint and the
# trainer exits 75; the script then requeues the job (same job id, same OUTPUT).
CHECKPOINT_ARGS=(--checkpoint-dir "$CHECKPOINT_DIR" --resume --checkpoint-every "$CHECKPOINT_EVERY")
# ==============================================================================================

echo "mpi_sgd: job ${SLURM_JOB_ID:-?} on $NODES node(s) x $TASKS_PER_NODE task(s) = $NTASKS rank(s)," \
     "$THREADS thread(s) per rank, time limit ${TIME_LIMIT:-?}; output in $OUTPUT"

# srun starts one rank per task. Depending on the site and the MPI library, srun may need
# --mpi=pmix (or --mpi=pmi2); `srun --mpi=list` shows what is available. If mpi4py uses an MPI
# wheel from PyPI (pip install '.[mpich]'), srun may be unable to start it: use
#   mpiexec -n "$NTASKS" "$PYTHON" -m mpi_sgd.train ...
# in its place.
#
# srun runs in the background so that this shell can pass the warning signal (sent to the batch
# shell only, "B:") on to it; srun forwards it to every rank.
srun "$PYTHON" -m mpi_sgd.train "${args[@]}" \
    ${extra[@]+"${extra[@]}"} ${CHECKPOINT_ARGS[@]+"${CHECKPOINT_ARGS[@]}"} &
launcher=$!
trap 'echo "mpi_sgd: got SIGUSR1, asking the ranks to checkpoint and stop"; kill -USR1 "$launcher" 2>/dev/null || true' USR1
trap 'echo "mpi_sgd: got SIGTERM, asking the ranks to checkpoint and stop"; kill -TERM "$launcher" 2>/dev/null || true' TERM
while :; do
    rc=0
    wait "$launcher" || rc=$?
    kill -0 "$launcher" 2>/dev/null || break   # still running: wait was cut short by a signal
done

echo "mpi_sgd.train exit code: $rc (see \"Exit codes\" in docs/usage.md)"
if [ "$rc" -eq 75 ]; then
    restarts=${SLURM_RESTART_COUNT:-0}
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "$restarts" -lt "$MAX_REQUEUES" ]; then
        echo "mpi_sgd: checkpoint written; requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))"
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    echo "mpi_sgd: checkpoint written; not requeueing (restart count $restarts of $MAX_REQUEUES)"
fi
exit "$rc"
