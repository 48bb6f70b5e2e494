"""Which commit a copy of mpi_sgd is, so every table can name the version it measured.

A snapshot made with ``git archive HEAD mpi_sgd | tar -x -C DIR`` has no ``.git``; its
``mpi_sgd/`` directory is hashed the way git hashes a tree (``__pycache__`` and ``*.pyc``
skipped) and matched against the ``mpi_sgd`` tree of this repository's commits, newest first.
A checkout is matched the same way, so uncommitted changes under ``mpi_sgd/`` show as such.
Read-only: nothing is written to any repository.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess

PACKAGE = "mpi_sgd"
HISTORY = 2000  # commits searched (first-parent history of HEAD)


def _git(repo: str, *args: str, stdin: str | None = None) -> str | None:
    try:
        res = subprocess.run(
            ["git", "-C", repo, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def _object(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(kind + b" %d\0" % len(data) + data).digest()


def tree_hash(path: str) -> str | None:
    """The git tree id of directory ``path`` as if every file in it were committed (None when
    it holds no file)."""
    raw = _tree(path)
    return raw.hex() if raw is not None else None


def _tree(path: str) -> bytes | None:
    entries = []
    for entry in os.scandir(path):
        name = entry.name
        if name == "__pycache__" or name.endswith((".pyc", ".pyo")):
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(entry.path).encode()
            entries.append((name.encode(), b"120000", _object(b"blob", target)))
        elif stat.S_ISDIR(st.st_mode):
            sub = _tree(entry.path)
            if sub is not None:  # git does not track empty directories
                entries.append((name.encode() + b"/", b"40000", sub))
        elif stat.S_ISREG(st.st_mode):
            with open(entry.path, "rb") as fh:
                blob = _object(b"blob", fh.read())
            mode = b"100755" if st.st_mode & stat.S_IXUSR else b"100644"
            entries.append((name.encode(), mode, blob))
    if not entries:
        return None
    entries.sort(key=lambda e: e[0])  # git orders a directory as its name + "/"
    body = b"".join(mode + b" " + key.rstrip(b"/") + b"\0" + sha for key, mode, sha in entries)
    return _object(b"tree", body)


def _repo_of(path: str) -> str | None:
    top = _git(path, "rev-parse", "--show-toplevel")
    return top.strip() if top else None


def identify(project: str, repo: str, label: str | None = None) -> dict:
    """Which commit of ``repo`` the ``mpi_sgd/`` under ``project`` is.

    Returns a dict with ``text`` (e.g. ``35b515f (HEAD; mpi_sgd/ unchanged since cc53a05)``),
    ``commit`` (short hash or None) and ``is_head``. When ``project`` is itself a git checkout,
    its own repository is searched; a ``label`` naming a commit is preferred among equal trees.
    """
    project = os.path.abspath(project)
    pkg = os.path.join(project, PACKAGE)
    own = _repo_of(project)
    repo = own if own and os.path.samefile(own, project) else repo
    out: dict = {"commit": None, "is_head": False, "text": f"`{project}`"}
    mine = tree_hash(pkg) if os.path.isdir(pkg) else None
    listed = _git(repo, "rev-list", "--first-parent", f"--max-count={HISTORY}", "HEAD")
    if mine is None or not listed:
        out["text"] += " (commit unknown)"
        return out
    commits = listed.split()
    query = "".join(f"{c}:{PACKAGE}\n" for c in commits)
    trees = [
        line.split()[0]
        for line in (_git(repo, "cat-file", "--batch-check", stdin=query) or "").splitlines()
    ]
    if len(trees) != len(commits):
        out["text"] += " (commit unknown)"
        return out
    matches = [i for i, t in enumerate(trees) if t == mine]
    primary = None
    if label:
        full = _git(repo, "rev-parse", "--verify", "-q", f"{label}^{{commit}}")
        tree = _git(repo, "rev-parse", "--verify", "-q", f"{label}:{PACKAGE}") if full else None
        if full and tree and tree.strip() == mine:
            primary = full.strip()
    if primary is None and matches:
        primary = commits[matches[0]]
    if primary is None:
        head = _git(repo, "rev-parse", "--short", "HEAD")
        out["text"] += (
            f": `{PACKAGE}/` matches no commit (HEAD is {head.strip() if head else '?'}; "
            "uncommitted changes?)"
        )
        return out

    def short(c: str) -> str:
        s = _git(repo, "rev-parse", "--short", c)
        return s.strip() if s else c[:7]

    out["commit"] = short(primary)
    out["is_head"] = primary == commits[0]
    notes = ["HEAD"] if out["is_head"] else []
    if primary in commits:
        i = commits.index(primary)
        while i + 1 < len(commits) and trees[i + 1] == mine:
            i += 1
        if commits[i] != primary:
            notes.append(f"`{PACKAGE}/` unchanged since {short(commits[i])}")
    out["text"] = out["commit"] + (f" ({'; '.join(notes)})" if notes else "")
    return out
