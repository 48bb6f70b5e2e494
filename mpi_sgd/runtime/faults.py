"""Fault injection for the reliability tests (never set in production).

``MPI_SGD_FAULTS`` holds comma-separated faults ``ACTION@RANK:STEP``; each fires once, on that
rank, just before global step STEP (0-based) is computed:

``raise``    raise RuntimeError (an unexpected failure on one rank)
``stall``    sleep for an hour (a rank stuck on a dead file system)
``signal``   send SIGTERM to this process (a preemption notice, at a reproducible step)
``corrupt``  add 1e-9 to this rank's first parameter (silent divergence between ranks)
``nan``      set this rank's first parameter to NaN (its gradient, and the sum, become NaN)
``stall-load`` sleep for an hour while loading the data (STEP is ignored)
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np

ENV = "MPI_SGD_FAULTS"
ACTIONS = ("raise", "stall", "signal", "corrupt", "nan", "stall-load")


@dataclass(frozen=True)
class Fault:
    """One injected fault."""

    action: str
    rank: int
    step: int


def parse_faults(text: str) -> list[Fault]:
    """Parse ``ACTION@RANK:STEP[,...]``; raises ValueError on a malformed entry."""
    faults = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        action, _, where = item.partition("@")
        rank, _, step = where.partition(":")
        if action not in ACTIONS or not rank.isdigit() or not step.isdigit():
            raise ValueError(
                f"bad {ENV} entry {item!r}; expected ACTION@RANK:STEP, ACTION in {ACTIONS}"
            )
        faults.append(Fault(action, int(rank), int(step)))
    return faults


class FaultInjector:
    """The faults of this rank, from the environment (empty, and free, when unset)."""

    def __init__(self, rank: int, text: str | None = None) -> None:
        text = os.environ.get(ENV, "") if text is None else text
        self.pending = [f for f in parse_faults(text) if f.rank == rank]

    def __bool__(self) -> bool:
        return bool(self.pending)

    def while_loading(self) -> None:
        """Fire the faults due while the data is loaded."""
        if any(f.action == "stall-load" for f in self.pending):
            time.sleep(3600)

    def before_step(self, step: int, params: np.ndarray) -> None:
        """Fire the faults due at global ``step``."""
        due = [f for f in self.pending if f.step == step and f.action != "stall-load"]
        for fault in due:
            self.pending.remove(fault)
            if fault.action == "raise":
                raise RuntimeError(f"injected failure at step {step}")
            if fault.action == "stall":
                time.sleep(3600)
            elif fault.action == "signal":
                os.kill(os.getpid(), signal.SIGTERM)
            elif fault.action == "corrupt":
                params[0] += 1e-9
            elif fault.action == "nan":
                params[0] = np.nan
