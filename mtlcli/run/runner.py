"""Sequences a training run; every step lives in its own function, and only events leave (never prints).

:func:`train` reads top to bottom (nanoGPT-style)::

    prepare          arguments, the run a --resume/--fork starts from, the data (user errors first)
    build            TensorFlow, train.distribute, the compiled model
    start_session    fresh, or weights, optimizer, selection and history back from the checkpoint
    open_run_dir     a new run directory, or the resumed one
    announce         Started (and Resumed) events
    fit              one or two ``model.fit`` calls under the signal guard (TensorBoard events in tb/)
    finish           best weights, model.keras, final evaluation, metrics.json, env.json

A start is final once the run has written its first checkpoint: a failure before that puts the run
directory back as it was (:class:`mtlcli.run.rundir.Opened`), so the same command can be run again.
Out-of-memory errors become one line naming what the run was doing (:mod:`mtlcli.run.failures`).

What each file of a run directory holds is in :mod:`mtlcli.run.rundir`; checkpoints are
:mod:`mtlcli.run.checkpoint`; the rules of a resume are :mod:`mtlcli.run.resume`.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlcli import data
from mtlcli.data import pipeline
from mtlcli.errors import RunError, UsageError
from mtlcli.events import EarlyStopped, Event, Finished, Resumed, Started
from mtlcli.fsio import disk_error
from mtlcli.recipe import LoadedRecipe
from mtlcli.run import checkpoint, rundir
from mtlcli.run import resume as resuming
from mtlcli.run.evaluate import evaluate_arrays
from mtlcli.run.failures import Memory, last_good
from mtlcli.run.signals import SignalGuard
from mtlcli.tfutil import import_tf

__all__ = ["Job", "RunResult", "train"]


def _noop(_event: Event) -> None:
    pass


@dataclass
class RunResult:
    run_dir: Path
    results: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    chief: bool = True  # False: a multi_worker worker that is not the chief (run_dir was its scratch copy)
    task: str = ""  # "worker 1" under multi_worker
    weights_epoch: int | None = None  # the epoch whose weights ``results`` are from (best or last)


@dataclass
class Job:
    """What a training run is, decided before TensorFlow is imported: passed from step to step."""

    loaded: LoadedRecipe
    prepared: data.Prepared
    seed: int
    epochs: int
    batch: int
    steps: int  # per epoch
    resolved: dict[str, Any]  # resolved.yaml
    output: str | Path | None = None  # where a new run goes: --output, or --fork's NEW_DIR
    force: bool = False
    source: resuming.Source | None = None  # the run a --resume/--fork continues
    fork: bool = False
    position: resuming.Position = field(default_factory=resuming.Position)

    @property
    def recipe(self):
        return self.loaded.recipe

    @property
    def in_place(self) -> bool:
        """A --resume without --fork: the run goes on in its own directory."""
        return self.source is not None and not self.fork


@dataclass
class Session:
    """The training state this session starts from (fresh, or restored from a checkpoint)."""

    selection: Any  # mtlcli.run.callbacks.Selection
    history: list[dict[str, Any]] = field(default_factory=list)
    best_weights: list | None = None
    notes: list[str] = field(default_factory=list)
    finished: bool = False  # the checkpoint is at the end: nothing is left to train


def train(
    loaded: LoadedRecipe | None,
    *,
    output: str | Path | None = None,
    force: bool = False,
    seed: int | None = None,
    epochs: int | None = None,
    on_event: Callable[[Event], None] = _noop,
    verbose: bool = False,
    resume: str | Path | None = None,
    fork: str | Path | None = None,
) -> RunResult:
    """Train a recipe into a new run directory, or continue a run from its checkpoint.

    ``resume=RUN_DIR`` continues RUN_DIR from ``checkpoints/last`` in place (``loaded`` may be None: the
    run's own recipe is used). With ``fork=NEW_DIR`` as well, a new run starts in NEW_DIR from that
    checkpoint (``resume`` may then also name a checkpoint directory such as ``RUN_DIR/checkpoints/best``).
    The recipe may differ from the run's only in :data:`mtlcli.run.resume.RESUME_SAFE` keys (a fork:
    :data:`~mtlcli.run.resume.FORK_SAFE`); other differences are refused, naming the keys.
    """
    job = prepare(loaded, output=output, force=force, seed=seed, epochs=epochs, resume=resume, fork=fork)
    tf = import_tf(verbose)
    from mtlcli import distribute

    # Before anything creates a tensor (logical devices, collective ops). A worker that is not the
    # chief runs every step (the collectives need it) but reports nothing and writes into a scratch
    # directory that is removed at the end.
    dist = distribute.setup(job.recipe.train, tf)
    if dist.is_chief:
        return _run(tf, job, dist, None, on_event)
    scratch = Path(tempfile.mkdtemp(prefix="mtl-worker-"))
    try:
        result = _run(tf, job, dist, scratch, _noop)
    finally:  # a worker that is not the chief: its copy of the run goes
        shutil.rmtree(scratch, ignore_errors=True)
    return dataclasses.replace(result, chief=False, task=dist.task)


def _run(tf, job: Job, dist, scratch: Path | None, on_event) -> RunResult:
    """The steps after TensorFlow is set up; a failure before the first checkpoint undoes the run
    directory (:meth:`mtlcli.run.rundir.Opened.close`)."""
    memory = Memory(tf, job.batch)
    with memory.guard("building the model"):
        model = build(job, dist)
    with memory.guard("restoring the checkpoint"):
        session = start_session(job, model)
    opened = open_run_dir(job, session, scratch)
    run_dir = opened.path
    try:
        announce(job, session, model, run_dir, on_event)
        run, seconds = fit(tf, job, session, model, run_dir, dist, on_event, memory)
        if run.selection.stopped:
            on_event(_early_stop(run))
        with memory.guard("evaluating and saving the trained model", run_dir):
            results = finish(tf, job, run, model, run_dir, dist, seconds)
    except BaseException:
        opened.close(failed=True)
        raise
    opened.close(failed=False)
    weights = weights_epoch(run, job)
    on_event(Finished(run_dir, len(run.history), run.selection.stopped, seconds, results, weights))
    return RunResult(run_dir, results, run.history, weights_epoch=weights)


def prepare(
    loaded: LoadedRecipe | None,
    *,
    output=None,
    force: bool = False,
    seed: int | None = None,
    epochs: int | None = None,
    resume=None,
    fork=None,
) -> Job:
    """Check the arguments, read the run a resume starts from and prepare the data: every user error
    surfaces here, before TensorFlow is imported or any directory is made."""
    if fork is not None and resume is None:
        raise UsageError("--fork NEW_DIR needs --resume RUN_DIR: the run (or checkpoint) to start from")
    if resume is not None and output is not None:
        raise UsageError(
            "--resume continues the run in its own directory; --output does not apply "
            "(to continue into a new directory use --fork NEW_DIR)"
        )
    source = resuming.open_source(Path(resume), forking=fork is not None) if resume is not None else None
    if loaded is None:
        if source is None:
            raise UsageError("missing RECIPE: give a recipe file (or --resume RUN_DIR)")
        loaded = source.original
    if source is not None:
        seed, epochs = resuming.seed_and_epochs(source, loaded, seed, epochs)
    recipe = loaded.recipe
    seed = recipe.seed if seed is None else int(seed)
    prepared = data.prepare(loaded, seed=seed)
    epochs = epochs or recipe.train.epochs
    batch = recipe.train.batch_size
    job = Job(
        loaded,
        prepared,
        seed,
        epochs,
        batch,
        steps=math.ceil(prepared.splits["train"].n / batch),
        resolved=rundir.resolved_recipe(loaded, seed, epochs),
        output=output if fork is None else fork,
        force=force,
        source=source,
        fork=fork is not None,
    )
    if source is not None:
        job.position = resuming.check(
            source, job.resolved, prepared.info, fork=job.fork, epochs=epochs, batch=batch, steps=job.steps
        )
    return job


def build(job: Job, dist):
    """The compiled model, built under the distribution's scope with its optimizer built (before any
    restore, so that Keras restores the Adam moments, and before the first step). A resume or a fork
    takes every weight from its checkpoint: ``model.init_from`` is not read again (a fork keeps the
    source run's record of it for its data.json)."""
    import keras

    from mtlcli.model.build import build_model

    if job.source is not None and "init_from" in job.source.info:
        job.prepared.info["init_from"] = job.source.info["init_from"]
    keras.utils.set_random_seed(job.seed)
    with dist.scope():
        model = build_model(job.loaded, job.prepared, job.seed, warm_start=job.source is None)
        model.optimizer.build(model.trainable_variables)
    return model


def start_session(job: Job, model) -> Session:
    """A fresh start, or the checkpoint's weights, optimizer, selection metric and history."""
    from mtlcli.run.callbacks import Selection

    selection = Selection.from_recipe(job.recipe, job.prepared.splits.get("validation") is not None)
    if job.source is None:
        return Session(selection)
    restored = resuming.restore_run(model, job.source, job.position, selection, fork=job.fork)
    pos = job.position
    finished = pos.step == 0 and (pos.epoch >= job.epochs or selection.stopped)
    return Session(selection, restored.history, restored.best_weights, restored.notes, finished)


def open_run_dir(job: Job, session: Session, scratch: Path | None) -> rundir.Opened:
    """The resumed run's own directory (refused when it has already finished), or a new one; the
    caller closes it (:meth:`~mtlcli.run.rundir.Opened.close`)."""
    source, pos = job.source, job.position
    if job.in_place:
        run_dir = source.run_dir
        if session.finished and (run_dir / "model.keras").exists() and (run_dir / "metrics.json").exists():
            stopped = session.selection.stopped
            why = "stopped early" if stopped else f"{pos.epoch} of {job.epochs} epochs"
            raise UsageError(
                f"{run_dir} has already finished ({why}); to train longer pass --epochs N with N > {pos.epoch}"
                + (" and raise train.early_stopping.patience" if stopped else "")
            )
        opened = rundir.enter(run_dir if scratch is None else scratch)
        try:
            rundir.record_resume(opened.path, job.resolved, source.env, source.state, pos.rendered())
        except BaseException:
            opened.close(failed=True)
            raise
        return opened
    target = scratch or job.output
    opened = rundir.create(job.loaded, target, job.force, job.prepared.info, job.seed, job.epochs)
    if source is not None:  # a fork: where it came from, the best checkpoint so far, the history so far
        try:
            _start_fork(job, session, opened.path)
        except BaseException:
            opened.close(failed=True)
            raise
    return opened


def _start_fork(job: Job, session: Session, run_dir: Path) -> None:
    source, pos = job.source, job.position
    rundir.record_fork(run_dir, source.run_dir, source.ckpt, source.state, pos.rendered())
    best = checkpoint.find(source.run_dir, "best")
    if best is not None and session.selection.best is not None and source.ckpt != best:
        shutil.copytree(best, run_dir / "checkpoints" / "best")
    if session.history:
        from mtlcli.run.callbacks import write_history

        write_history(run_dir, session.history)


def announce(job: Job, session: Session, model, run_dir: Path, on_event) -> None:
    """The Started event (tasks, rows, parameters) and, for a resume or fork, the Resumed event."""
    from mtlcli.model.build import count_params
    from mtlcli.weighting.registry import display_name

    recipe = job.recipe
    tasks_info = {}
    for t, spec in recipe.model.tasks.items():
        metrics = recipe.metrics(t)
        tasks_info[t] = {
            "type": spec.type,
            "metrics": metrics,
            "main": f"{t}_{metrics[0]}" if metrics else f"{t}_loss",
        }
    params = {"shared": count_params(model.train_shared_variables)}  # freeze_epochs' layers train later
    for t, layers in model.heads.items():
        params[t] = count_params([v for layer in layers for v in layer.trainable_variables])
    info = job.prepared.info
    on_event(
        Started(
            run_dir,
            tasks_info,
            info["split_rows"],
            info["coverage"],
            params,
            job.epochs,
            job.steps,
            display_name(recipe.train.weighting),
            job.seed,
        )
    )
    if job.source is not None:
        pos = job.position
        on_event(
            Resumed(
                run_dir,
                job.source.ckpt,
                pos.epoch,
                pos.step,
                job.steps,
                job.epochs,
                pos.rendered(),
                session.notes,
                job.fork,
            )
        )


def fit(tf, job: Job, session: Session, model, run_dir: Path, dist, on_event, memory: Memory):
    """Train the epochs that are left; returns the callback's RunState and the seconds it took.

    A non-finite loss (``train.on_nan: stop``) becomes a RunError that names the last good checkpoint;
    so does running out of memory, naming the epoch and step.
    """
    from mtlcli.run import callbacks
    from mtlcli.run.callbacks import NonFinite, RunCallback, RunState

    recipe, pos, source = job.recipe, job.position, job.source
    # Between epoch-end checkpoints at least CHECKPOINT_SECONDS; under tf.distribute every process
    # must take the same decision (a checkpoint reads values across replicas): one every epoch.
    seconds = 0.0 if dist.kind != "none" else callbacks.CHECKPOINT_SECONDS
    run = RunState(
        run_dir=run_dir,
        epochs=job.epochs,
        steps=job.steps,
        history=session.history,
        selection=session.selection,
        base_state={"seed": job.seed, "batch_size": job.batch},
        resume_command=f"mtl train --resume {shlex.quote(str(run_dir))}",
        checkpoint_every=recipe.train.checkpoint_every,
        checkpoint_seconds=seconds,
        first_epoch=pos.epoch,
        first_step=pos.step,
        metrics_from=source.ckpt if source is not None and pos.step else None,
        skip_nonfinite=recipe.train.on_nan == "skip_batch",
        skipped=int(pos.state.get("skipped_batches", 0)),
        best_weights=session.best_weights,
    )
    model.skip_nonfinite = run.skip_nonfinite
    if job.in_place and not session.finished:
        # the epochs after the checkpoint are trained again: their rows (a run stopped between two
        # checkpoints) leave history.csv now, and come back as they are replayed
        _history_as_restored(run_dir, session.history)
    if recipe.train.tensorboard:
        from mtlcli.run.tensorboard import Board

        run.board = Board(tf, run_dir, model, session.history)
    callback = RunCallback(on_event, run, model)
    if job.fork:  # the fork's starting point is its first checkpoint (resumable, "last good")
        if pos.step:
            checkpoint.restore_metrics(model, source.ckpt)
        checkpoint.save(model, run_dir, "last", callback.state_at(pos.epoch, pos.step), with_metrics=True)
    val = job.prepared.splits.get("validation")
    val_ds = dist.dataset(pipeline.dataset(tf, val, max(job.batch, 256), job.seed)) if val else None
    started = time.time()
    try:
        with SignalGuard() as guard, memory.guard(run.doing, run_dir):
            run.guard = guard
            if not session.finished:
                _fit_epochs(tf, job, model, callback, dist, val_ds)
    except NonFinite:
        raise RunError(run.failure + last_good(run_dir)) from None
    except OSError as exc:
        raise disk_error(exc, f"to the run directory {run_dir}") from None
    finally:
        if run.board is not None:  # finished, interrupted or failed: the event files are complete
            run.board.close()
    return run, time.time() - started


def _history_as_restored(run_dir: Path, history: list[dict[str, Any]]) -> None:
    from mtlcli.run.callbacks import write_history

    if history:
        write_history(run_dir, history)
    else:
        (run_dir / "history.csv").unlink(missing_ok=True)


def _fit_epochs(tf, job: Job, model, callback, dist, val_ds) -> None:
    """The rest of a partly done epoch (a mid-epoch resume), then the remaining epochs.

    Two ``fit`` calls, because ``steps_per_epoch`` is one number per call. Each reads the batches from
    :func:`mtlcli.data.pipeline.train_stream`, whose order depends only on (seed, epoch), so a resumed
    run sees exactly the batches the uninterrupted one would have seen.
    """
    pos, train_split = job.position, job.prepared.splits["train"]

    def fit_range(first_epoch: int, first_step: int, end_epoch: int) -> None:
        stream = pipeline.train_stream(
            tf, train_split, job.batch, job.seed, first_epoch, first_step, end_epoch
        )
        if model.strategy.needs_validation:  # Auto-Lambda: one validation batch with every step
            stream = tf.data.Dataset.zip((stream, _validation_stream(tf, job, first_epoch, first_step)))
        model.fit(
            dist.dataset(stream),
            validation_data=val_ds,
            initial_epoch=first_epoch,
            epochs=end_epoch,
            steps_per_epoch=job.steps - first_step,
            callbacks=[callback],
            verbose=0,
            shuffle=False,
        )

    epoch = pos.epoch
    if pos.step:
        fit_range(epoch, pos.step, epoch + 1)
        epoch += 1
    if epoch < job.epochs and not callback.run.selection.stopped:
        fit_range(epoch, 0, job.epochs)


def _validation_stream(tf, job: Job, first_epoch: int, first_step: int):
    """The validation batches a strategy with ``needs_validation`` reads, one per training step: the
    validation split reshuffled each pass with the run's seed, repeated, from the batch of global step
    ``first_epoch * steps + first_step`` (a resumed run reads the batches the uninterrupted one would)."""
    split = job.prepared.splits["validation"]
    batches = pipeline.dataset(tf, split, job.batch, job.seed + 1, shuffle=True).repeat()
    return batches.skip(first_epoch * job.steps + first_step)


def _early_stop(run) -> EarlyStopped:
    sel = run.selection
    restored = sel.restore_best and run.best_weights is not None
    epoch = int(run.history[-1]["epoch"]) if run.history else sel.best_epoch or 0
    return EarlyStopped(epoch, sel.monitor, sel.wait, sel.min_delta, sel.best_epoch, restored)


def weights_epoch(run, job: Job) -> int | None:
    """The epoch whose weights the final model holds: the best one under ``restore_best``, else the
    last trained (counting the epochs before a resume)."""
    sel = run.selection
    if sel.restore_best and run.best_weights is not None and sel.best_epoch is not None:
        return sel.best_epoch
    return int(run.history[-1]["epoch"]) if run.history else job.position.epoch or None


def finish(tf, job: Job, run, model, run_dir: Path, dist, seconds: float) -> dict[str, Any]:
    """The best weights back (``restore_best``), model.keras, the validation and test results,
    metrics.json and env.json; returns the results."""
    selection = run.selection
    if selection.restore_best and run.best_weights is not None:
        model.set_weights(run.best_weights)
    rundir.save_model(run_dir, model)
    results: dict[str, Any] = {"splits": {}}
    for split in ("validation", "test"):
        if split in job.prepared.splits:
            results["splits"][split] = evaluate_arrays(tf, model, job.prepared.splits[split])
    results["epochs_run"] = len(run.history)
    results["train_seconds"] = round(seconds, 3)
    if run.skip_nonfinite:
        results["skipped_batches"] = run.skipped
    if selection.best is not None:
        results["best"] = {
            "monitor": selection.monitor,
            "value": selection.best,
            "epoch": selection.best_epoch,
        }
    distribution = None
    if dist.kind != "none":
        distribution = {"kind": dist.kind, "replicas": dist.replicas, "workers": dist.workers}
    rundir.write_results(
        run_dir, results, len(run.history), seconds, continued=job.in_place, distribution=distribution
    )
    return results
