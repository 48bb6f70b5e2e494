#!/bin/bash
# Train with mpi_sgd under PBS Pro / OpenPBS:   qsub scripts/pbs_train.sh
#
# Resources are the #PBS lines below (options given to qsub on the command line override them).
# Run settings are the variables in the "run settings" block; each can also be set at
# submission without editing this file, e.g.
#   qsub -v TRAIN=data/W1/train,TEST=data/W1/test,EPOCHS=20 scripts/pbs_train.sh
#   qsub -v CONFIG=runs/mpi_sgd-76/run.toml scripts/pbs_train.sh   # an earlier run's options
#
#PBS -N mpi_sgd
#PBS -l select=2:ncpus=4:mpiprocs=4
#PBS -l walltime=01:00:00
#PBS -j oe
#PBS -r y
# -r y: rerunnable, so that PBS itself requeues the job when the scheduler preempts it (the
# ranks checkpoint on the SIGTERM it sends first; the rerun resumes). Torque uses
# "-l nodes=2:ppn=4" in place of the select line. Site-specific, as needed:
##PBS -q workq
##PBS -A myproject
#
# Stopping and continuing (docs/usage.md, "Running under Slurm / PBS"):
#   walltime        the trainer stops itself STOP_MARGIN s early (--stop-after) with a
#                   checkpoint; this script submits itself again and the new job resumes
#   qdel JOBID      SIGTERM: checkpoint, then the job ends for good (not resubmitted)
#   qsig -s USR1 JOBID   checkpoint now and continue in a new job (resubmitted)
#   preemption      SIGTERM: checkpoint; PBS requeues the job itself (-r y), not resubmitted

# ---- stop signals: caught before anything that can take time ---------------------------------
# The handler only notes the signal and passes it to the launcher once it runs (PBS signals
# the ranks too; a stop that arrives twice is one stop to them).
stop_signal=""
launcher=""
on_stop_signal() {
    stop_signal=$1
    if [ -n "$launcher" ]; then
        echo "mpi_sgd: got SIG$1, asking the ranks to checkpoint and stop"
        kill -s USR1 "$launcher" 2>/dev/null || true
    else
        echo "mpi_sgd: got SIG$1 before the ranks were started"
    fi
}
trap 'on_stop_signal USR1' USR1
trap 'on_stop_signal TERM' TERM

set -euo pipefail

# PBS starts the script in $HOME; go to the directory qsub was run from.
cd "${PBS_O_WORKDIR:-.}"

# ---- run settings ---------------------------------------------------------------------------
CONFIG=${CONFIG:-}                 # a --config TOML file (docs/usage.md, "Config files"), e.g.
                                   # a run's OUTPUT/run.toml; then TRAIN, TEST, MODEL, EPOCHS and
                                   # BATCH_SIZE come from it, unless set here (they override it)
or_default() {  # $1, unless CONFIG is set: then the config file decides
    if [ -z "$CONFIG" ]; then printf '%s' "$1"; fi
}
TRAIN=${TRAIN:-$(or_default synthetic:binary)}  # your data, e.g. data/W1/train (docs/data.md)
TEST=${TEST:-}                     # empty: none (a synthetic TRAIN evaluates its own test split)
MODEL=${MODEL:-$(or_default logistic)}          # logistic | softmax | hinge | squared
EPOCHS=${EPOCHS:-$(or_default 10)}
BATCH_SIZE=${BATCH_SIZE:-$(or_default 256)}     # global batch: rows per step over all ranks
job_number=${PBS_JOBID:-local}
OUTPUT=${OUTPUT:-runs/mpi_sgd-${job_number%%.*}}  # a resubmitted run keeps its first job's
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
METRICS="$OUTPUT/metrics.jsonl"

# With CONFIG, the file holds the run's options and these flags override it: the settings
# above only when set, and always what this script manages (output, metrics, threads, and the
# checkpoint flags below).
args=()
if [ -n "$CONFIG" ]; then
    args+=(--config "$CONFIG")
fi
for setting in "--train=$TRAIN" "--model=$MODEL" "--epochs=$EPOCHS" "--batch-size=$BATCH_SIZE"; do
    if [ -n "${setting#*=}" ]; then
        args+=("${setting%%=*}" "${setting#*=}")
    fi
done
args+=(
    --output "$OUTPUT"
    --metrics "$METRICS"
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
# serves the first job and every resubmitted one. SIGTERM (qdel, preemption) and SIGUSR1 stop
# the same way; only the walltime stop and SIGUSR1 resubmit (see the end of this script).
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
metrics_lines=0
if [ -f "$METRICS" ]; then
    metrics_lines=$(wc -l < "$METRICS")
fi
rc=0
if [ -z "$stop_signal" ]; then
    # In the background, so that this shell can pass a signal on while it waits.
    "$MPIEXEC" -n "$NP" --hostfile "$PBS_NODEFILE" "$PYTHON" -m mpi_sgd.train "${args[@]}" \
        ${extra[@]+"${extra[@]}"} ${CHECKPOINT_ARGS[@]+"${CHECKPOINT_ARGS[@]}"} &
    launcher=$!
    if [ -n "$stop_signal" ]; then   # arrived while the launcher was being started
        kill -s USR1 "$launcher" 2>/dev/null || true
    fi
    while :; do
        rc=0
        wait "$launcher" || rc=$?
        if [ "$rc" -le 128 ]; then
            break
        fi
        if kill -0 "$launcher" 2>/dev/null; then
            continue   # a trapped signal cut the wait short; the launcher still runs
        fi
        late=0
        wait "$launcher" 2>/dev/null || late=$?
        if [ "$late" -ne 127 ]; then rc=$late; fi   # 127: that first wait had its status
        break
    done
    echo "mpi_sgd.train exit code: $rc (see \"Exit codes\" in docs/usage.md)"
else
    echo "mpi_sgd: SIG$stop_signal arrived before training started; the newest checkpoint stands"
    rc=75
fi
elapsed=$SECONDS
trap '' USR1 TERM

if [ "$rc" -ne 75 ] && [ -n "$stop_signal" ] && [ "$rc" -gt 128 ]; then
    if tail -n +"$((metrics_lines + 1))" "$METRICS" 2>/dev/null | grep -q '"event": "end"'; then
        echo "mpi_sgd: training had finished (model saved) when SIG$stop_signal came"
        rc=0
    else
        echo "mpi_sgd: the ranks were stopped by SIG$stop_signal before they could checkpoint;" \
             "the newest checkpoint stands"
        rc=75
    fi
fi
if [ "$rc" -ne 75 ]; then
    exit "$rc"
fi

# ==== who stopped the run: resubmit only after the walltime stop (or an explicit SIGUSR1) ======
# The trainer's own account (its last "stopped" record): --stop-after, SIGTERM or SIGUSR1.
reason=$(tail -n +"$((metrics_lines + 1))" "$METRICS" 2>/dev/null | grep '"event": "stopped"' \
         | tail -n 1 | sed -n 's/.*"reason": "\([^"]*\)".*/\1/p' || true)
if [ "$stop_signal" = USR1 ] || { [ "$stop_signal" != TERM ] && [[ "$reason" == SIGUSR1* ]]; }; then
    why="SIGUSR1 (qsig -s USR1)"
elif [[ "$reason" == --stop-after* ]] && [ "$stop_signal" != TERM ]; then
    why="the walltime (--stop-after $stop_after)"
elif [ "$elapsed" -ge $(( WALLTIME_SECONDS - 5 )) ]; then
    why="the walltime"   # PBS's own kill at the walltime: STOP_MARGIN was too small
else
    # qdel, or a preemption (PBS requeues a rerunnable job itself): never resubmit.
    by=${stop_signal:+SIG$stop_signal}   # what this shell got; else the trainer's account
    echo "mpi_sgd: stopped by ${by:-${reason:-SIGTERM}} (qdel or preemption): checkpoint" \
         "written to $CHECKPOINT_DIR, not resubmitting. To continue, submit again:" \
         "qsub -v OUTPUT=$OUTPUT $SELF (a preempted, rerunnable job is requeued by PBS itself)"
    exit "$rc"
fi
if [ "$RESUBMIT" != 1 ]; then
    echo "mpi_sgd: checkpoint written; stopped by $why; RESUBMIT=$RESUBMIT, so not resubmitting"
    exit "$rc"
fi
# The run settings travel with -v (values must not contain commas).
settings="OUTPUT=$OUTPUT,CHECKPOINT_DIR=$CHECKPOINT_DIR,TRAIN=$TRAIN,TEST=$TEST,MODEL=$MODEL"
settings="$settings,EPOCHS=$EPOCHS,BATCH_SIZE=$BATCH_SIZE,WALLTIME_SECONDS=$WALLTIME_SECONDS"
settings="$settings,STOP_MARGIN=$STOP_MARGIN,CHECKPOINT_EVERY=$CHECKPOINT_EVERY,SELF=$SELF"
settings="$settings,VENV=$VENV,PYTHON=$PYTHON,THREADS=$THREADS,MPIEXEC=$MPIEXEC"
settings="$settings,TRAIN_ARGS=$TRAIN_ARGS,CONFIG=$CONFIG"
echo "mpi_sgd: checkpoint written; stopped by $why: submitting $SELF again to continue"
if ! qsub -v "$settings" "$SELF"; then
    echo "mpi_sgd: qsub failed; the checkpoint in $CHECKPOINT_DIR stays valid (submit again)"
    exit "$rc"
fi
exit 0
