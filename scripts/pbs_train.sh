#!/bin/bash
# Train with mpi_sgd under PBS Pro / OpenPBS:   qsub scripts/pbs_train.sh
#
# Resources are the #PBS lines below (options given to qsub on the command line override them).
# Run settings are the variables in the "run settings" block; each can also be set at
# submission without editing this file, e.g.
#   qsub -v TRAIN=data/W1/train,TEST=data/W1/test,EPOCHS=20 scripts/pbs_train.sh
#
#PBS -N mpi_sgd
#PBS -l select=2:ncpus=4:mpiprocs=4
#PBS -l walltime=01:00:00
#PBS -j oe
# Torque uses "-l nodes=2:ppn=4" in place of the select line. Site-specific, as needed:
##PBS -q workq
##PBS -A myproject

set -euo pipefail

# PBS starts the script in $HOME; go to the directory qsub was run from.
cd "${PBS_O_WORKDIR:-.}"

# ---- run settings ---------------------------------------------------------------------------
TRAIN=${TRAIN:-synthetic:binary}   # your data, e.g. data/W1/train (see docs/data.md)
TEST=${TEST:-}                     # empty: none (a synthetic TRAIN evaluates its own test split)
MODEL=${MODEL:-logistic}           # logistic | softmax | hinge | squared
EPOCHS=${EPOCHS:-10}
BATCH_SIZE=${BATCH_SIZE:-256}      # global batch: rows per step summed over all ranks
OUTPUT=${OUTPUT:-runs/mpi_sgd-${PBS_JOBID%%.*}}  # a resubmitted run keeps its first job's
TRAIN_ARGS=${TRAIN_ARGS:-}         # more mpi_sgd.train flags, e.g. "--optimizer adam --lr 0.01"
WALLTIME_SECONDS=${WALLTIME_SECONDS:-3600}  # keep equal to "-l walltime" above
STOP_MARGIN=${STOP_MARGIN:-300}    # stop this many seconds before the walltime, checkpoint first
CHECKPOINT_DIR=${CHECKPOINT_DIR:-$OUTPUT/checkpoints}  # on a file system every node sees
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}  # also checkpoint every N steps (0: epochs only)
RESUBMIT=${RESUBMIT:-1}            # after a timed stop, qsub this script again to continue
SELF=${SELF:-scripts/pbs_train.sh} # this script, relative to the qsub directory
VENV=${VENV:-.venv}                # activated if it exists
PYTHON=${PYTHON:-python}
THREADS=${THREADS:-1}              # BLAS threads per rank; mpiprocs x THREADS <= ncpus
MPIEXEC=${MPIEXEC:-mpiexec}

# What PBS granted (edit the #PBS lines to change it): one $PBS_NODEFILE line per MPI process.
if [ -z "${PBS_NODEFILE:-}" ] || [ ! -r "$PBS_NODEFILE" ]; then
    echo "pbs_train.sh: \$PBS_NODEFILE is not set or not readable; submit with qsub" >&2
    exit 2
fi
NP=$(wc -l < "$PBS_NODEFILE")
NODES=$(sort -u "$PBS_NODEFILE" | wc -l)
TASKS_PER_NODE=$(( NP / NODES ))
WALLTIME=${PBS_WALLTIME:-}

# ---- environment ----------------------------------------------------------------------------
# Load the MPI that mpi4py was built against (see docs/usage.md), e.g.:
# module load openmpi
if [ -f "$VENV/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
fi

# Limit BLAS/OpenMP threads per rank: ranks x threads <= cores.
export OMP_NUM_THREADS=$THREADS
export OPENBLAS_NUM_THREADS=$THREADS
export MKL_NUM_THREADS=$THREADS
export BLIS_NUM_THREADS=$THREADS
export NUMEXPR_NUM_THREADS=$THREADS

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

# ==== checkpoint / resume / resubmit ==========================================================
# PBS sends no warning before the walltime, so the trainer stops itself STOP_MARGIN seconds
# early (--stop-after): every rank finishes its step, a checkpoint is written, exit code 75.
# --resume continues from the newest valid checkpoint (or starts fresh), so the same script
# serves the first job and every resubmitted one. SIGTERM (qdel, preemption) stops the same way.
stop_after=$(( WALLTIME_SECONDS - STOP_MARGIN ))
if [ "$stop_after" -lt 1 ]; then
    echo "pbs_train.sh: STOP_MARGIN must be smaller than WALLTIME_SECONDS" >&2
    exit 2
fi
CHECKPOINT_ARGS=(--checkpoint-dir "$CHECKPOINT_DIR" --resume --checkpoint-every "$CHECKPOINT_EVERY"
                 --stop-after "$stop_after")
# ==============================================================================================

echo "mpi_sgd: job ${PBS_JOBID:-?} on $NODES node(s) x $TASKS_PER_NODE process(es) = $NP rank(s)," \
     "$THREADS thread(s) per rank, walltime ${WALLTIME:-?}; output in $OUTPUT"

# --hostfile works with both MPICH (hydra) and Open MPI. An MPI built with PBS (TM) support
# finds the nodes by itself; a site wrapper (e.g. HPE/Cray, Intel MPI) may want other options.
rc=0
"$MPIEXEC" -n "$NP" --hostfile "$PBS_NODEFILE" "$PYTHON" -m mpi_sgd.train "${args[@]}" \
    ${extra[@]+"${extra[@]}"} ${CHECKPOINT_ARGS[@]+"${CHECKPOINT_ARGS[@]}"} || rc=$?

echo "mpi_sgd.train exit code: $rc (see \"Exit codes\" in docs/usage.md)"
if [ "$rc" -eq 75 ] && [ "$RESUBMIT" = 1 ]; then
    # The run settings travel with -v (values must not contain commas).
    settings="OUTPUT=$OUTPUT,CHECKPOINT_DIR=$CHECKPOINT_DIR,TRAIN=$TRAIN,TEST=$TEST,MODEL=$MODEL"
    settings="$settings,EPOCHS=$EPOCHS,BATCH_SIZE=$BATCH_SIZE,WALLTIME_SECONDS=$WALLTIME_SECONDS"
    settings="$settings,STOP_MARGIN=$STOP_MARGIN,CHECKPOINT_EVERY=$CHECKPOINT_EVERY,SELF=$SELF"
    settings="$settings,VENV=$VENV,PYTHON=$PYTHON,THREADS=$THREADS,MPIEXEC=$MPIEXEC"
    settings="$settings,TRAIN_ARGS=$TRAIN_ARGS"
    echo "mpi_sgd: checkpoint written; submitting $SELF again to continue"
    qsub -v "$settings" "$SELF"
    exit 0
fi
exit "$rc"
