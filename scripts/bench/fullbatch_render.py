"""The markdown of ``docs/benchmarks-fullbatch.md`` from one run of ``fullbatch.py``."""

from __future__ import annotations

import statistics

from report import fmt_range, markdown_table

SPEED_BAR = 0.5
FLOOR_BAR = 1.15
SGD = "mpi_sgd sgd"
SK_LBFGS, SK_NEWTON = "scikit-learn lbfgs", "scikit-learn newton-cholesky"


def _reps(res: dict, system: str) -> list[dict]:
    return [r for r in res["launches"] if r["system"] == system and r["rep"] >= 0]


def _ok(runs: list[dict], target: float) -> list[dict]:
    return [
        r
        for r in runs
        if r["error"] is None and r["seconds"] is not None and (r["grad_inf"] or 0.0) <= target
    ]


def _times(res: dict, system: str, target: float) -> dict[int, float]:
    """rep -> seconds, for the repetitions of ``system`` that met the target."""
    return {r["rep"]: r["seconds"] for r in _ok(_reps(res, system), target)}


def _median_time(res: dict, system: str, target: float) -> float | None:
    t = _times(res, system, target)
    return statistics.median(t.values()) if t else None


def _paired(res: dict, num: str, den: str, target: float) -> list[float]:
    a, b = _times(res, num, target), _times(res, den, target)
    return [a[k] / b[k] for k in sorted(a) if k in b and b[k] > 0]


def _fastest(res: dict, systems: list[str], target: float) -> str | None:
    timed = [(t, s) for s in systems if (t := _median_time(res, s, target)) is not None]
    return min(timed)[1] if timed else None


def _verdict(values: list[float], bar: float) -> str:
    if not values:
        return "**not measured**"
    return "met" if statistics.median(values) <= bar else "**not met**"


def _title(res: dict) -> str:
    w = res["workload"]
    kind = "sparse CSR, " if w["sparse"] else ""
    model = f"softmax, {w['n_classes']} classes" if w["model"] == "softmax" else "binary logistic"
    return (
        f"{w['name']}: {w['n_train']:,} rows × {w['n_features']:,} features ({kind}{model}), "
        f"P = {res['n_params']:,}, l2 = 1/n_train = {1.0 / w['n_train']:.3g}"
    )


def system_table(res: dict, target: float) -> str:
    """One workload's systems: time to target and what each did."""
    sk = [s for s in res["systems"] if s.startswith("scikit-learn")]
    fastest_sk = _fastest(res, sk, target)
    rows = []
    for s in res["systems"]:
        runs = _reps(res, s)
        tol = res["tols"].get(s)
        if tol is None:
            calib = [r for r in res["launches"] if r["system"] == s and r["rep"] < 0]
            last = calib[-1] if calib else {}
            err = last.get("error") or ""
            if err.startswith("timed out"):
                err = f"> {err.split()[-1]} (killed at the launch timeout; not repeated)"
            why = err or (
                f"target not met down to tol {last.get('tol', 0):g} "
                f"(‖∇F‖∞ = {last.get('grad_inf') or float('nan'):.2e})"
            )
            rows.append([s, "–", f"not reached: {why}"[:160], "", "", "", "", "", "", ""])
            continue
        ok = _ok(runs, target)
        times = [r["seconds"] for r in ok]
        ratio = ""
        if fastest_sk is not None:
            ratio = fmt_range(_paired(res, s, fastest_sk, target), 3, "×")
        fig = [r["figures"] for r in ok] or [{}]
        iters = sorted({f.get("iterations") for f in fig if f.get("iterations") is not None})
        evals = sorted({f.get("evaluations") for f in fig if f.get("evaluations") is not None})
        hess = sorted({f.get("hessian_products") for f in fig if f.get("hessian_products")})
        per_pass = []
        for r in ok:
            passes = r["figures"].get("passes") or r["figures"].get("evaluations")
            if passes:
                per_pass.append(1e3 * r["seconds"] / passes)
        worst = max((r["grad_inf"] for r in runs if r["grad_inf"] is not None), default=None)
        failed = len(runs) - len(ok)
        rows.append(
            [
                s,
                f"{tol:g}",
                fmt_range(times) + (f" [{failed} of {len(runs)} failed]" if failed else ""),
                ratio,
                _span(iters),
                _span(evals),
                _span(hess),
                f"{worst:.1e}" if worst is not None else "–",
                fmt_range(per_pass, 3),
                f"{len(ok)}" + (" (slow: not repeated)" if s in res.get("once", []) else ""),
            ]
        )
    header = [
        "system",
        "tol given",
        "seconds to target, median (min–max)",
        f"× {fastest_sk or 'scikit-learn'} (paired)",
        "iterations",
        "evaluations of (F, ∇F)",
        "Hessian products (Newton-CG) or Hessians (Cholesky)",
        "reference ‖∇F‖∞, worst rep",
        "ms per pass (fit / passes)",
        "runs",
    ]
    return markdown_table(header, rows)


def _span(values: list) -> str:
    if not values:
        return "–"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def targets_table(results: list[dict], target: float) -> str:
    rows = []
    for res in results:
        name = res["workload"]["name"]
        mpi = [s for s in res["systems"] if s.startswith("mpi_sgd")]
        best = _fastest(res, mpi, target)
        if res["workload"]["sparse"]:
            peers, what = [SK_LBFGS], SK_LBFGS
        else:
            peers = [s for s in res["systems"] if s.startswith("scikit-learn")]
            what = "scikit-learn's fastest"
        ref = _fastest(res, peers, target)
        if best and ref:
            ratios = _paired(res, best, ref, target)
            figure = f"`{best}` / `{ref}`" + (f" ({what})" if what != ref else "")
            rows.append(
                [
                    name,
                    figure,
                    f"≤ {SPEED_BAR}×",
                    fmt_range(ratios, 3, "×"),
                    _verdict(ratios, SPEED_BAR),
                ]
            )
        else:
            rows.append(
                [name, f"best mpi_sgd / {what}", f"≤ {SPEED_BAR}×", "–", "**not measured**"]
            )
        floors = [r["figures"]["ratio"] for r in _reps(res, "floor") if r["error"] is None]
        rows.append(
            [
                name,
                "one evaluation (`loss_gradient`) / streaming floor",
                f"≤ {FLOOR_BAR}×",
                fmt_range(floors, 3, "×"),
                _verdict(floors, FLOOR_BAR),
            ]
        )
    return markdown_table(["workload", "figure", "target", "this run, median (min–max)", ""], rows)


def numpy_code(runs: list[dict]) -> str:
    """The evaluation without the compiled kernels: ms, and its ratio to the floor."""
    ratio = fmt_range([f["ratio_numpy"] for f in runs], 3, "×")
    return f"{fmt_range([1e3 * f['evaluation_numpy'] for f in runs], 3)} ({ratio})"


def floor_table(results: list[dict]) -> str:
    rows = []
    for res in results:
        runs = [r["figures"] for r in _reps(res, "floor") if r["error"] is None]
        if not runs:
            continue

        def ms(key: str, runs: list[dict] = runs) -> str:
            return fmt_range([1e3 * f[key] for f in runs], 3)

        f0 = runs[0]
        rows.append(
            [
                res["workload"]["name"],
                f"{f0['rows_per_rank']:,} ({f0['block_rows']:,} per block)",
                ms("evaluation"),
                numpy_code(runs) if "evaluation_numpy" in f0 else "–",
                ms("evaluation_curvature"),
                ms("hessian_vector"),
                ms("floor_two_streams"),
                ms("floor_blocks"),
                fmt_range([f["ratio"] for f in runs], 3, "×"),
            ]
        )
    header = [
        "workload",
        "rows per rank",
        "`loss_gradient` ms",
        "numpy code ms (/ floor)",
        "with curvature ms",
        "`hessian_vector` ms",
        "floor: whole slice ms",
        "floor: by blocks ms",
        "evaluation / floor",
    ]
    return markdown_table(header, rows)


def sgd_table(results: list[dict], info: dict) -> str:
    rows = []
    for res in results:
        runs = [r for r in _reps(res, SGD) if r["error"] is None]
        if not runs:
            continue
        f0 = runs[0]["figures"]
        reached = [r["seconds"] for r in runs if r["seconds"] is not None]
        note = "" if len(reached) == len(runs) else f" [{len(reached)}/{len(runs)} reached]"
        ttt = (
            fmt_range(reached) + " s" if reached else f"not reached in {f0['epochs']} epochs"
        ) + note
        last = [r["figures"]["test_losses"][-1] for r in runs]
        best_fb = _fastest(
            res, [s for s in res["systems"] if s.startswith("mpi_sgd")], info["target"]
        )
        rows.append(
            [
                res["workload"]["name"],
                f"{f0['batch']} × {info['ranks']}, lr {f0['lr']:g} invscaling,"
                f" {f0['epochs']} epochs",
                f"{res['optimum_test_loss']:.6f} → {f0['target_loss']:.6f}",
                ttt,
                fmt_range(last, 6),
                f"{best_fb}: "
                + fmt_range(list(_times(res, best_fb, info["target"]).values()))
                + " s"
                if best_fb
                else "–",
            ]
        )
    header = [
        "workload",
        "per-rank batch × ranks, schedule",
        "optimum's test log-loss → target (+0.1%)",
        "SGD time-to-target",
        "SGD test log-loss, last epoch",
        "best full-batch, to ‖∇F‖∞ ≤ target",
    ]
    return markdown_table(header, rows)


def render(info: dict, results: list[dict]) -> str:
    target = info["target"]
    m = dict(info["machine"])
    checks = ", ".join(
        f"{r['workload']['name']} {r.get('reference_check', float('nan')):.1e}" for r in results
    )
    scales = ", ".join(f"{k} {v:g}" for k, v in info["scales"].items())
    lines = [
        f"# Full-batch solvers: time to ‖∇F‖∞ ≤ {target:g}",
        "",
        "Generated by `scripts/bench/fullbatch.py`; do not edit by hand (except the profile"
        " section at the end, which regenerating keeps). Regenerate with:",
        "",
        "```",
        info["command"],
        "```",
        "",
        f"Run on {info['date']}, {info['minutes']:.1f} minutes; load average (1/5/15 min)"
        f" {info['load'][0]} before, {info['load'][1]} after. **A shared machine: 2 cores, and"
        " other agents were using the CPUs while this ran** (the load average above counts"
        " their processes too): compare the systems within this run, by the paired ratios,"
        " not with figures from another run.",
        "",
        markdown_table(["machine", ""], [[k, v] for k, v in m.items()]),
        "",
        "## Settings",
        "",
        f"- Objective: `F = mean loss + l2/2 ‖coef‖²`, intercepts unpenalised, `l2 = 1/n_train`"
        " (scikit-learn's `C = 1/(n l2) = 1`); binary logistic on W1 and W2, softmax on W3;"
        f" zero start. Workload scales (`--scale`, `--w2-scale`): {scales}.",
        f"- **Target**: `‖∇F‖∞ ≤ {target:g}` computed by **one reference scorer**"
        " (`scripts/bench/fullbatch_ref.py`: numpy, float64, the whole training set) on the"
        " coefficients each system returns; a system's own convergence report is not used."
        " Before each workload the script checks that reference against mpi_sgd's own"
        " objective and central finite differences on its first 2,000 rows (largest"
        f" difference: {checks}; it refuses to score above 1e-7).",
        f"- mpi_sgd: `mpiexec -n {info['ranks']}`, one BLAS thread per rank, each rank holding its"
        " contiguous rows in memory; the library's `LBFGSSolver` (history 10) and `make_newton`"
        " over `DistributedObjective`, as `python -m mpi_sgd.train --solver lbfgs|newton` builds"
        f" them. scikit-learn `LogisticRegression` and scipy `L-BFGS-B` (`maxcor` 10,"
        f" `ftol` 0, on the reference objective): one process, {info['ranks']} BLAS threads"
        " (threadpoolctl), the whole training set in memory.",
        "- Load excluded: only the fit is timed (mpi_sgd: `solver.fit()` between barriers).",
        "- **Calibration**, in the first repetition: each system first runs with"
        " `tol = target`; while the reference score misses the target, `tol` is divided by 10"
        " (at most 4 times) and the system runs again at once; the run that meets the target is"
        " the first repetition's, the later repetitions use that `tol` (column *tol given*)."
        f" A system whose first run takes more than {info['cap']:g} s runs only once (*runs*"
        " column; it is then many times slower than the fastest, and repeating it would take"
        " the run past 15 minutes), except scikit-learn's solvers, against which the targets"
        f" are judged; a launch still running after {info['timeout']:g} s is killed and"
        " reported as slower than that.",
        f"- {info['reps']} repetitions; in each every system runs once, in turn, each repetition"
        " starting one system later, each launch a separate process. Ratios are paired per"
        " repetition (the two systems ran in the same repetition), summarised by the median.",
        "- *ms per pass*: fit seconds over the passes over the rows it made (mpi_sgd: evaluations,"
        " Hessian-vector products and Hessians; scipy: evaluations): what one pass costs inside"
        " the solver, its own arithmetic and Allreduces included.",
        f"- {info['spark']}",
        "",
        "## The targets",
        "",
        targets_table(results, target),
        "",
    ]
    for res in results:
        lines += [f"## {_title(res)}", "", system_table(res, target), ""]
        lines += [f"- {n}" for n in res["notes"]]
        if res["notes"]:
            lines.append("")
    lines += [
        "## One evaluation against the streaming floor",
        "",
        "Per rank, at the optimum, medians over the timed passes of each repetition, each pass"
        f" between barriers ({info['ranks']} ranks streaming at once, a pass lasting until the"
        " slower one ends), interleaved. `loss_gradient`: one pass over the rank's rows and one"
        " Allreduce of `P + 3` values; binary logistic row by row in the compiled kernel"
        " (`mpi_sgd/model/_fused.c`: score, loss, residual and `g += r x` while the row is in"
        " L1), softmax block by block with BLAS's products and the compiled loss loop. *numpy"
        " code*: the same evaluation with `MPI_SGD_NO_FUSED=1` (scores, loss, `X_bᵀ r` per"
        " block, all numpy: what an installation without a C compiler runs). The floor: no loss, no"
        " communication, the faster of `s = X w; g = sᵀ X` over the whole slice (two streams"
        " over the rows; softmax `S = X Wᵀ; G = Sᵀ X`) and the same block by block with"
        " mpi_sgd's block size (one stream); for CSR scipy's `X @ w` and `X.T @ s`.",
        "",
        floor_table(results),
        "",
        "## mpi_sgd SGD, for context",
        "",
        "`python -m mpi_sgd.train` with the bench suite's settings (`--optimizer sgd`, L2 = 1/n,"
        " zero start); time-to-target as in `docs/benchmarks.md`: cumulative training seconds"
        " (loading and evaluation excluded) at the first epoch end whose test log-loss is within"
        " 0.1% of the optimum's (the optimum: the best-scored full-batch solution of this run).",
        "",
        sgd_table(results, info),
        "",
    ]
    return "\n".join(lines)
