"""Which Python runs each tool: the benchmark's own, or one that fits the tool's release.

A peer whose releases declare ``Requires-Python >= 3.12`` (``MIN_PYTHON`` in its
adapter) runs in a virtual environment the benchmark builds from
benchmarks/requirements-py312.txt with the first interpreter it finds that fits (this
one, ``python3.X`` on the PATH, or pyenv's versions); the other tools run where the
benchmark runs. Invariant: a tool is reported "not
run" only with the true reason (no interpreter fits, or the install failed, with pip's
last words), never because of the interpreter the benchmark itself happens to run on.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = ROOT / ".venv-bench" / "peers"
REQUIREMENTS = {(3, 12): ROOT / "benchmarks" / "requirements-py312.txt"}

Version = tuple[int, int]


def _version(python: str) -> Version | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (int(out[0]), int(out[1])) if len(out) == 2 else None


def candidates() -> list[str]:
    """Interpreters to try, this one first (PATH, then pyenv's, newest last)."""
    found = [sys.executable]
    for minor in range(10, 16):
        exe = shutil.which(f"python3.{minor}")
        if exe:
            found.append(exe)
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(os.path.join(pyenv, "versions", "3.*", "bin", "python3")))
    return list(dict.fromkeys(found))


def interpreter(minimum: Version) -> tuple[str, Version] | None:
    """The first candidate whose version is at least ``minimum`` (and below 3.14, which
    the pinned peers do not yet publish wheels for)."""
    for exe in candidates():
        v = _version(exe)
        if v is not None and minimum <= v < (3, 14):
            return exe, v
    return None


def python_for(minimum: Version | None) -> tuple[str | None, str]:
    """``(python, note)`` for a tool needing ``minimum``: ``python`` is None when it cannot
    run, and ``note`` says why; otherwise ``note`` names the interpreter."""
    if minimum is None:  # runs where the benchmark runs (its requirements-compare.txt)
        here = sys.version_info[:2]
        return sys.executable, f"Python {here[0]}.{here[1]}"
    found = interpreter(minimum)
    if found is None:
        seen = ", ".join(f"{e} ({_version(e)})" for e in candidates())
        return None, f"no interpreter >= {minimum[0]}.{minimum[1]} found (tried {seen})"
    exe, v = found
    venv = PEERS_DIR / f"py{v[0]}.{v[1]}"
    why = _build(exe, venv, REQUIREMENTS[minimum])
    if why:
        return None, why
    return str(venv / "bin" / "python"), f"Python {v[0]}.{v[1]} ({exe})"


def _build(exe: str, venv: Path, requirements: Path) -> str | None:
    """Build ``venv`` unless it already holds ``requirements`` as they are now."""
    stamp = venv / ".requirements-sha256"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return None
    print(f"building {venv.relative_to(ROOT)} with {exe} (a few minutes, once)", flush=True)
    steps = [
        [exe, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", "-e", str(ROOT), "-r", str(requirements)],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            return f"`{' '.join(cmd[:3])} ...` failed: {tail[0][:200]}"
    stamp.write_text(want + "\n")
    return None
