"""Training a sweep's runs in child processes, N at once, each with its share of the cores.

Each run is ``python -m mtlcli train RECIPE --set ... --seed S --output DIR`` (``--force`` when the
directory holds a run that never wrote a checkpoint) or ``python -m mtlcli train --resume DIR``. A child
gets ``TF_NUM_INTRAOP_THREADS`` = its share of the cores (cores // jobs, or ``--threads``),
``TF_NUM_INTEROP_THREADS=1`` and ``OMP_NUM_THREADS`` = the share (TensorFlow reads them when it
starts), so the children never use more threads than there are cores; more jobs than cores run as
many at once as there are cores (a note says so) unless ``--threads`` is given. Its output goes to
``logs/<point>/seed-<k>.log`` in the sweep directory; progress is read from the run's
``history.csv`` (an epoch per row).

Children run in their own session, so a Ctrl-C at the terminal reaches the sweep only: the sweep
forwards one SIGINT (the child saves a checkpoint and exits 130), a second Ctrl-C forwards another
(the child stops at once, its last checkpoint intact), a third kills them. On Linux a child also gets
SIGTERM when the sweep itself dies (``PR_SET_PDEATHSIG``), so a SIGKILLed sweep leaves checkpoints,
not orphans still training.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mtlcli.run.signals import Handlers
from mtlcli.sweep.state import Entry, action, facts, outcome, transition

PR_SET_PDEATHSIG = 1


def cores() -> int:
    """The cores this process may use (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_plan(n_cores: int, jobs: int, threads: int | None) -> tuple[int, int, str | None]:
    """``(jobs at once, threads per child, note)``: never more threads in total than cores unless
    ``threads`` is given."""
    if threads is not None:
        return jobs, threads, None
    note = None
    if jobs > n_cores:
        note = f"--jobs {jobs} on {n_cores} core(s): {n_cores} at once, 1 thread each (--threads to force)"
        jobs = n_cores
    return jobs, max(1, n_cores // jobs), note


def child_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(
        TF_NUM_INTRAOP_THREADS=str(threads),
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS=str(threads),
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        PYTHONUNBUFFERED="1",
        CI="true",
    )
    return env


def train_args(recipe: str, sets: list[str], seed: int, output: str) -> list[str]:
    """The ``mtl train`` arguments of a fresh run."""
    out = ["train", recipe]
    for s in sets:
        out += ["--set", s]
    return [*out, "--seed", str(seed), "--output", output]


def plan_line(recipe: str, sets: list[str], seed: int, output: str) -> str:
    """The shell command that trains one run (``mtl sweep --plan``)."""
    return "mtl " + shlex.join(train_args(recipe, sets, seed, output))


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Job:
    """One run to train: its entry, directory, recipe overrides and (once started) its process."""

    entry: Entry
    run_dir: Path
    recipe: str
    sets: list[str]
    epochs: int
    headline: str  # the history.csv column shown (val_<task>_<metric>)
    log: Path
    proc: subprocess.Popen | None = None
    mode: str = ""
    epoch: int = 0
    value: float | None = None
    epoch_times: list[float] = field(default_factory=list)
    seen_mtime: float = 0.0

    def command(self, python: str = sys.executable) -> list[str]:
        """The child's command line, from what the run directory holds (:func:`action`)."""
        self.mode = action(facts(self.run_dir))
        if self.mode == "resume":
            return [python, "-m", "mtlcli", "train", "--resume", str(self.run_dir)]
        args = train_args(self.recipe, self.sets, self.entry.seed, str(self.run_dir))
        return [python, "-m", "mtlcli", *args, *(["--force"] if self.mode == "restart" else [])]

    def eta(self) -> float | None:
        """Seconds left: the mean epoch time of this session times the epochs left."""
        if len(self.epoch_times) < 2 or self.epoch >= self.epochs:
            return None
        per = (self.epoch_times[-1] - self.epoch_times[0]) / (len(self.epoch_times) - 1)
        return per * (self.epochs - self.epoch)


def read_progress(job: Job) -> bool:
    """Update ``job``'s epoch and headline value from its ``history.csv``; whether they changed."""
    path = job.run_dir / "history.csv"
    try:
        mtime = path.stat().st_mtime
        if mtime == job.seen_mtime:
            return False
        lines = path.read_text().splitlines()
    except OSError:
        return False
    job.seen_mtime = mtime
    if len(lines) < 2:
        return False
    head, last = lines[0].split(","), lines[-1].split(",")
    epoch = len(lines) - 1
    with contextlib.suppress(ValueError, IndexError):
        epoch = int(float(last[head.index("epoch")]))
    for col in (job.headline, job.headline.removeprefix("val_")):
        if col in head:
            with contextlib.suppress(ValueError, IndexError):
                job.value = float(last[head.index(col)])
            break
    changed = epoch != job.epoch
    if changed:
        job.epoch = epoch
        job.epoch_times.append(time.monotonic())
    return changed


def last_error(log: Path) -> str:
    """The child's error message: its last ``error:`` line (and what follows), else its last line."""
    try:
        lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error:"):
            return " ".join(ln.strip() for ln in lines[i : i + 4]).removeprefix("error:").strip()
    return lines[-1].strip() if lines else "no output"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process that is an ``mtl train`` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        with contextlib.suppress(OSError):
            return b"mtlcli" in cmdline.read_bytes()
    return True


def wait_for_orphan(pid: int, timeout: float = 120.0, poll: float = 0.5) -> None:
    """A child an earlier (killed) sweep left running: SIGTERM (it saves a checkpoint), wait for it."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(poll)
    if pid_alive(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start(job: Job, threads: int, python: str = sys.executable) -> None:
    """Start ``job``'s child (its output appended to its log) and mark its entry running."""
    cmd = job.command(python)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "ab") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        job.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(threads),
            start_new_session=True,
            preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
        )
    job.epoch_times, job.seen_mtime = [time.monotonic()], 0.0
    transition(job.entry, "running", pid=job.proc.pid)


def finish(job: Job, stopping: bool) -> str:
    """Record how ``job``'s child ended; returns the new state."""
    assert job.proc is not None
    code = job.proc.returncode
    read_progress(job)
    state = outcome(code, facts(job.run_dir), stopping)
    error = None
    if state == "failed":
        error = f"exit {code}: {last_error(job.log)}"
    transition(job.entry, state, error=error)
    return state


class Stopper(Handlers):
    """SIGINT/SIGTERM to the sweep: counted (the scheduler forwards them to the children)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.signum: int | None = None

    def handle(self, signum, frame) -> None:
        self.count += 1
        self.signum = signum


def forward(jobs: list[Job], count: int) -> None:
    """Pass the ``count``-th stop on to the running children: SIGINT twice, then SIGKILL."""
    sig = signal.SIGINT if count <= 2 else signal.SIGKILL
    for job in jobs:
        if job.proc is not None and job.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(job.proc.pid, sig)


def schedule(
    todo: list[Job],
    jobs: int,
    threads: int,
    on_change: Callable[[str, Job], None],
    save: Callable[[], None],
    poll: float = 0.5,
) -> int | None:
    """Train ``todo`` with at most ``jobs`` children at once. ``on_change(kind, job)`` is called with
    ``start``, ``epoch``, ``end`` and ``tick`` (every ``poll`` seconds); ``save()`` after every state
    change. Returns the signal number that stopped the sweep, or None when every run ended."""
    queue, running = list(todo), []
    with Stopper() as stop:
        forwarded = 0
        while queue or running:
            if stop.count > forwarded:
                forwarded = stop.count
                forward(running, forwarded)
            while queue and len(running) < jobs and not stop.count:
                job = queue.pop(0)
                start(job, threads)
                running.append(job)
                save()
                on_change("start", job)
            for job in list(running):
                if job.proc is not None and job.proc.poll() is not None:
                    running.remove(job)
                    finish(job, stopping=bool(stop.count))
                    save()
                    on_change("end", job)
                elif read_progress(job):
                    on_change("epoch", job)
            if stop.count and not running:
                break
            on_change("tick", running[0] if running else todo[0])
            time.sleep(poll)
        return stop.signum if stop.count else None
