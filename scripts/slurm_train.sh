#!/bin/bash
# Train with mpi_sgd under Slurm:   sbatch scripts/slurm_train.sh
#
# Resources are the #SBATCH lines below (options given to sbatch on the command line override
# them). Run settings are the variables in the "run settings" block; each can also be set at
# submission without editing this file, e.g.
#   TRAIN=data/W1/train TEST=data/W1/test EPOCHS=20 sbatch scripts/slurm_train.sh
#   CONFIG=runs/mpi_sgd-4242/run.toml sbatch scripts/slurm_train.sh  # an earlier run's options
# (sbatch passes the submitting environment to the job by default).
#
# Stopping and continuing (docs/usage.md, "Running under Slurm / PBS"):
#   time limit      the --signal warning below makes the ranks checkpoint; the job requeues
#                   itself and the next run resumes (up to MAX_REQUEUES times)
#   preemption      checkpoint; requeued (by Slurm itself under PreemptMode=REQUEUE, else here)
#   scancel JOBID   checkpoint, then the job ends for good (CANCELLED): no requeue
#   scancel --signal=USR1 --batch JOBID   checkpoint now and requeue (continue later)
#
#SBATCH --job-name=mpi_sgd
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpi_sgd-%j.out
#SBATCH --open-mode=append      # a requeued run appends to the same log
#SBATCH --signal=B:USR1@120     # warn this script 120-150 s before the time limit...
#SBATCH --requeue               # ...so the run checkpoints, exits 75 and is requeued here
# Site-specific, uncomment as needed:
##SBATCH --partition=compute
##SBATCH --account=myproject
##SBATCH --mem-per-cpu=4G

# ---- stop signals: caught before anything that can take time ---------------------------------
# SIGUSR1 (the time-limit warning) would end an untrapped shell at once, without a checkpoint.
# The handler only notes the signal and passes it to the launcher once it runs.
stop_signal=""
launcher=""
on_stop_signal() {
    stop_signal=$1
    if [ -n "$launcher" ]; then
        echo "mpi_sgd: got SIG$1, asking the ranks to checkpoint and stop"
        kill -s "$1" "$launcher" 2>/dev/null || true
    else
        echo "mpi_sgd: got SIG$1 before the ranks were started"
    fi
}
trap 'on_stop_signal USR1' USR1
trap 'on_stop_signal TERM' TERM

set -euo pipefail

# Slurm starts the script in the submit directory already; be explicit for relative paths.
cd "${SLURM_SUBMIT_DIR:-.}"

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
OUTPUT=${OUTPUT:-runs/mpi_sgd-${SLURM_JOB_ID:-local}}
TRAIN_ARGS=${TRAIN_ARGS:-}         # more mpi_sgd.train flags, e.g. "--optimizer adam --lr 0.01"
CHECKPOINT_DIR=${CHECKPOINT_DIR:-$OUTPUT/checkpoints}  # on a file system every node sees
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}  # also checkpoint every N steps (0: epochs only)
MAX_REQUEUES=${MAX_REQUEUES:-20}   # stop requeueing after this many restarts
VENV=${VENV:-.venv}                # activated if it exists
PYTHON=${PYTHON:-python}
# How the ranks are started:
#   LAUNCHER=srun (default) with --mpi=$SRUN_MPI. pmi2 is what the MPICH wheel (pip install
#     '.[mpich]', as the README installs) speaks; the Open MPI wheel and most site Open MPIs
#     need SRUN_MPI=pmix; SRUN_MPI= (empty) leaves the choice to the site's MpiDefault.
#     `srun --mpi=list` shows what this Slurm offers.
#   LAUNCHER=mpiexec: the mpiexec of the MPI that mpi4py uses (the venv's, for a wheel), which
#     starts its helpers through srun itself.
LAUNCHER=${LAUNCHER:-srun}
SRUN_MPI=${SRUN_MPI-pmi2}

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
# Not SRUN_CPUS_PER_TASK: it would also apply to the one-task helper step that mpiexec starts on
# each node, which would then hold THREADS CPUs for all of that node's ranks (under
# task/affinity every rank of the node ran on CPU 0). Our own srun gets --cpus-per-task below.
unset SRUN_CPUS_PER_TASK

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

# ==== checkpoint / resume / requeue ===========================================================
# --resume continues from the newest valid checkpoint (or starts fresh the first time), so the
# same script serves the first run and every requeued one. On SIGUSR1 or SIGTERM every rank
# finishes its step, writes a checkpoint and the trainer exits 75; what happens next depends on
# who stopped it (see the end of this script).
CHECKPOINT_ARGS=(--checkpoint-dir "$CHECKPOINT_DIR" --resume --checkpoint-every "$CHECKPOINT_EVERY")
# ==============================================================================================

case "$LAUNCHER" in
    srun)
        # --wait: once one rank has ended, the others get 60 s, not forever (ranks always end
        # together; one alone died, e.g. in MPI_Init, and its peers would wait for it).
        launch=(srun --cpus-per-task="$THREADS" --wait=60)
        if [ -n "$SRUN_MPI" ]; then
            launch+=(--mpi="$SRUN_MPI")
        fi
        ;;
    mpiexec) launch=(mpiexec -n "$NTASKS") ;;
    *) echo "slurm_train.sh: LAUNCHER must be srun or mpiexec, got '$LAUNCHER'" >&2; exit 2 ;;
esac

echo "mpi_sgd: job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on $NODES node(s) x" \
     "$TASKS_PER_NODE task(s) = $NTASKS rank(s), $THREADS thread(s) per rank, time limit" \
     "${TIME_LIMIT:-?}; ${launch[*]}; output in $OUTPUT"

# A requeued job numbers its steps from 0 again, and MPICH names its shared memory after the
# step: /dev/shm/mpich_shm_<FNV-1a hash of "JOBID.STEP">_<node>. A segment left there by ranks
# that were killed instead of finalized (SIGKILL after KillWait, a crash) makes the rerun's
# MPI_Init fail or hang on that node (measured). So a requeued run first removes this job's own
# segments on every node (step 0), then trains as step 1: the name it will use.
fnv1a32() {
    local text=$1 hash=2166136261 i code
    for ((i = 0; i < ${#text}; i++)); do
        printf -v code '%d' "'${text:i:1}"
        hash=$(( ((hash ^ code) * 16777619) & 0xffffffff ))
    done
    printf '%x' "$hash"
}
if [ "$LAUNCHER" = srun ] && [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && [ -n "${SLURM_JOB_ID:-}" ] \
        && [ -z "$stop_signal" ]; then
    step_hash=$(fnv1a32 "$SLURM_JOB_ID.1")
    srun --nodes="$NODES" --ntasks="$NODES" --ntasks-per-node=1 --cpus-per-task=1 --mpi=none \
        bash -c "rm -f /dev/shm/mpich_shm_${step_hash}_* /dev/shm/mpich_vci_${step_hash}_*" \
        || true
fi

metrics_lines=0
if [ -f "$METRICS" ]; then
    metrics_lines=$(wc -l < "$METRICS")
fi
rc=0
if [ -z "$stop_signal" ]; then
    # In the background, so that this shell can pass the warning signal (sent to the batch shell
    # only, "B:") on; srun and mpiexec forward it to every rank.
    "${launch[@]}" "$PYTHON" -m mpi_sgd.train "${args[@]}" \
        ${extra[@]+"${extra[@]}"} ${CHECKPOINT_ARGS[@]+"${CHECKPOINT_ARGS[@]}"} &
    launcher=$!
    if [ -n "$stop_signal" ]; then   # arrived while the launcher was being started
        kill -s "$stop_signal" "$launcher" 2>/dev/null || true
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
trap '' USR1 TERM   # from here on (a requeue signals this shell too): finish what we do

if [ "$rc" -ne 75 ] && [ -n "$stop_signal" ] && [ "$rc" -gt 128 ]; then
    if tail -n +"$((metrics_lines + 1))" "$METRICS" 2>/dev/null | grep -q '"event": "end"'; then
        # The signal came as the ranks were exiting after the end of training.
        echo "mpi_sgd: training had finished (model saved) when SIG$stop_signal came"
        rc=0
    else
        # A rank still starting up (before its handlers exist) dies of the signal.
        echo "mpi_sgd: the ranks were stopped by SIG$stop_signal before they could checkpoint;" \
             "the newest checkpoint stands"
        rc=75
    fi
fi
if [ "$rc" -ne 75 ]; then
    case "$rc" in
        0|1|2|3|4|5|6|130) ;;
        *) echo "mpi_sgd: the ranks did not start or were killed (exit $rc). With the MPICH wheel" \
                "use LAUNCHER=srun SRUN_MPI=pmi2 (now: LAUNCHER=$LAUNCHER SRUN_MPI=$SRUN_MPI)," \
                "with Open MPI SRUN_MPI=pmix; \`srun --mpi=list\` shows what Slurm offers." ;;
    esac
    exit "$rc"
fi
if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "mpi_sgd: checkpoint written; not under Slurm, so not requeueing"
    exit "$rc"
fi

# ==== who stopped the run: requeue only after the time limit or a preemption ===================
# While Slurm ends a job (cancel, time limit, preemption, requeue) `scontrol show job` says
# JobState=COMPLETING whatever the cause, so the cause is read from the other fields: a restart
# count above this run's (requeued already, by Slurm or by hand), PreemptTime, Reason=TimeLimit.
job_field() {  # the value of one field of `scontrol show job` (empty if unknown)
    { scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null || true; } | tr ' ' '\n' \
        | sed -n "s/^$1=//p" | head -n 1 || true
}
restarts=${SLURM_RESTART_COUNT:-0}
state=$(job_field JobState)
job_reason=$(job_field Reason)
preempt_time=$(job_field PreemptTime)
now_restarts=$(job_field Restarts)
# The trainer's own account (its last "stopped" record): SIGUSR1, SIGTERM or --stop-after.
reason=$(tail -n +"$((metrics_lines + 1))" "$METRICS" 2>/dev/null | grep '"event": "stopped"' \
         | tail -n 1 | sed -n 's/.*"reason": "\([^"]*\)".*/\1/p' || true)
if [ "${now_restarts:-0}" -gt "$restarts" ] 2>/dev/null \
        || [[ "$state" =~ ^(PENDING|REQUEUED|REQUEUE_HOLD|REQUEUE_FED|SPECIAL_EXIT)$ ]]; then
    why=requeued
elif [ -n "$preempt_time" ] && [ "$preempt_time" != None ] || [ "$state" = PREEMPTED ]; then
    why=preemption
elif [[ "$state" =~ ^(TIMEOUT|DEADLINE)$ ]] || [[ "$job_reason" =~ ^(TimeLimit|DeadLine)$ ]]; then
    why="the time limit"
elif [[ "$state" =~ ^(CANCELLED|COMPLETING)$ ]]; then
    why=cancelled   # ended by Slurm for none of the reasons above: scancel
elif [ "$stop_signal" = USR1 ] || [[ "$reason" == SIGUSR1* ]]; then
    why="the time-limit warning (SIGUSR1)"
elif [[ "$reason" == --stop-after* ]]; then
    why="--stop-after"
else
    why=signal      # a SIGTERM while the job runs on: scancel --signal=TERM, kill
fi
case "$why" in
    cancelled)
        echo "mpi_sgd: job $SLURM_JOB_ID was cancelled (scancel): checkpoint written to" \
             "$CHECKPOINT_DIR, not requeueing. To continue later, submit again with" \
             "OUTPUT=$OUTPUT (the run resumes from it)."
        exit "$rc"
        ;;
    requeued)
        echo "mpi_sgd: checkpoint written; job $SLURM_JOB_ID is already requeued (state $state):" \
             "it resumes when it runs again"
        exit 0
        ;;
    signal)
        echo "mpi_sgd: stopped by ${reason:-SIG${stop_signal:-TERM}}, which was neither the time" \
             "limit nor a preemption: checkpoint written to $CHECKPOINT_DIR, not requeueing" \
             "(to continue: scontrol requeue $SLURM_JOB_ID, or submit again with OUTPUT=$OUTPUT)"
        exit "$rc"
        ;;
esac
if [ "$restarts" -ge "$MAX_REQUEUES" ]; then
    echo "mpi_sgd: checkpoint written; stopped by $why, but not requeueing (restart count" \
         "$restarts of MAX_REQUEUES=$MAX_REQUEUES)"
    exit "$rc"
fi
echo "mpi_sgd: checkpoint written; stopped by $why: requeueing job $SLURM_JOB_ID" \
     "(restart $((restarts + 1)))"
if out=$(scontrol requeue "$SLURM_JOB_ID" 2>&1); then
    exit 0
fi
case "$out" in
    *"pending"*|*"Pending"*)   # requeued meanwhile (by Slurm, or an outside scontrol requeue)
        echo "mpi_sgd: job $SLURM_JOB_ID is already requeued"
        exit 0
        ;;
esac
echo "mpi_sgd: scontrol requeue failed: $out; the checkpoint in $CHECKPOINT_DIR stays valid" \
     "(submit again with OUTPUT=$OUTPUT to continue)"
exit "$rc"
