"""Where a training run lives and which config it runs with: ``--out``, ``--resume`` and ``--cfg`` /
``--set`` resolved against a checkpoint's own config, so a resumed run never silently continues with
another network or data set.

A run folder that holds an earlier run is written into only by ``--resume`` (continuing that run) or
after ``--force`` has moved the earlier run aside to ``OUT.old-<date>-<time>``; a run that fails before
its first checkpoint removes what it made (:class:`RunFolder`), its ``log.txt`` closed first
(:func:`close_log_file`).

Example:
    >>> config_differences(defaults(), load_config(None, ["train.epochs=3"]))
    ['train.epochs: 100 -> 3']
"""
import logging
import os
import sys
import time
from pathlib import Path

from lowpower.config import ConfigError, apply_overrides, defaults, load_config, merge
from lowpower.config import validate as validate_config
from lowpower.paths import REPO_ROOT
from lowpower.safe import UserError

# Every file a run writes into OUT; a folder holding any of them holds a run.
RUN_FILES = ("best.pt", "last.pt", "best_int8.pt", "config.yaml", "history.json", "curves.png", "log.txt")
# What a run has written before its first checkpoint: nothing that --resume auto could continue.
BEFORE_CHECKPOINT = {"config.yaml", "log.txt"}
CHECKPOINTS = ("last.pt", "best.pt")
FORCE_HELP = ("when OUT holds an earlier run that no --resume continues: move that run aside to "
              "OUT.old-<date>-<time> (nothing is deleted) and start a new one in OUT")


class RunFolderError(UserError, ConfigError):
    """--out names a folder this run may not write into; one line naming the folder and the fix."""


def run_folder(args):
    """OUT: --out, else the folder of an explicit --resume file, else runs/<config name>."""
    if args.out:
        return Path(args.out)
    if args.resume and args.resume != "auto":
        return Path(args.resume).parent
    if not args.cfg:
        raise ConfigError("give --out DIR or --cfg FILE")
    return REPO_ROOT / "runs" / Path(args.cfg).stem


def resolve_resume(args, out):
    """The checkpoint path to resume from, or None."""
    if not args.resume:
        return None
    if args.resume == "auto":
        last = out / "last.pt"
        return last if last.is_file() else None
    return Path(args.resume)


def run_files(out):
    """The names of :data:`RUN_FILES` present in ``out``.

    Example:
        >>> run_files(Path("/nonexistent"))
        []
    """
    return [name for name in RUN_FILES if (Path(out) / name).exists()]


def inside(path, folder):
    """True when ``path`` lies in ``folder`` (links and ``..`` followed).

    Example:
        >>> inside("runs/x/best.pt", "runs/x"), inside("runs/y/best.pt", "runs/x")
        (True, False)
    """
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def aside_name(out):
    """A free name to move the run in ``out`` to: ``OUT.old-<date>-<time>``, then ``-2``, ``-3``, ...

    Example:
        >>> aside_name(Path("/nonexistent/run")).name.startswith("run.old-")
        True
    """
    base = out.with_name("%s.old-%s" % (out.name, time.strftime("%Y%m%d-%H%M%S")))
    candidate, number = base, 1
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = base.with_name("%s-%d" % (base.name, number))
    return candidate


def weight_inputs(cfg):
    """Files a run reads after its folder is set up: ``model.init_from``, ``quant.init_from``, ``distill.teacher``.

    Each as given and as taken from the repository root (the readers try one or the other).
    """
    paths = [cfg["model"]["init_from"], cfg["quant"]["init_from"], cfg["distill"]["teacher"]]
    return [candidate for path in paths if path
            for candidate in (Path(path).expanduser(), REPO_ROOT / Path(path).expanduser())]


class RunFolder:
    """The folder a run writes: what it found there, what ``--force`` moved aside, what the run made.

    :func:`plan_run_folder` decides (every process, before any writes); :meth:`claim` acts (rank 0
    alone); :meth:`undo` removes what a run made when it fails before its first checkpoint.

    Attributes:
        out: the run folder.
        continuing: the run continues the one in ``out`` (``--resume``).
        aside: where ``--force`` moves the earlier run, or None.
        made: folders :meth:`claim` created, deepest first.
        found: names of files present before the run wrote any.
        claimed: :meth:`claim` ran in this process.

    Example:
        >>> folder = plan_run_folder(Path("runs/x"), None, force=False)  # doctest: +SKIP
        >>> folder.claim()                                               # doctest: +SKIP
    """

    def __init__(self, out, continuing=False, aside=None):
        self.out, self.continuing, self.aside = Path(out), continuing, aside
        self.made, self.found, self.claimed, self.moved = [], set(), False, False

    def claim(self):
        """Move an earlier run aside (``--force``), create the folder, note what is already there."""
        if self.aside is not None:
            os.rename(self.out, self.aside)
            self.moved = True
        folder = self.out.absolute()
        while not folder.exists() and not folder.is_symlink():
            self.made.append(folder)
            folder = folder.parent
        self.out.mkdir(parents=True, exist_ok=True)
        self.found = {path.name for path in self.out.iterdir()}
        self.claimed = True
        return self

    def has_checkpoint(self):
        """A checkpoint this run saved is in the folder (then nothing is undone)."""
        return any(name not in self.found and (self.out / name).exists() for name in CHECKPOINTS)

    def undo(self):
        """After a failure before the first checkpoint: remove the run files this run made, the folders
        it created when they are left empty, and move a run ``--force`` moved aside back.

        Files the folder held before are kept, and so is a folder that existed before; a continued run
        keeps everything (its checkpoints carry what it did). Returns the paths removed.
        """
        if not self.claimed or self.continuing or self.has_checkpoint():
            return []
        removed = []
        for name in RUN_FILES:
            path = self.out / name
            if name not in self.found and path.is_file():
                path.unlink()
                removed.append(path)
        for folder in self.made:  # deepest first; one that holds anything stays
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                removed.append(folder)
        if self.moved and not self.out.exists():
            os.rename(self.aside, self.out)
            self.moved = False
        return removed


def plan_run_folder(out, resume_path, force, auto=False, inputs=()):
    """Decide how a run may use ``out``, or refuse; reads only, so every process can ask.

    A missing or empty folder, or one without run files, is used as it is. One that holds a run is
    used only when ``resume_path`` lies in it (continuing that run), or, with ``auto`` (``--resume
    auto``), when that run never reached a checkpoint; ``force`` moves it aside instead.

    Args:
        out: the run folder (``--out``).
        resume_path: the checkpoint the run resumes from, or None.
        force: ``--force``: move an earlier run aside.
        auto: ``--resume auto`` was given.
        inputs: files the run reads later (:func:`weight_inputs`); none may be inside a folder
            ``force`` moves.

    Returns:
        A :class:`RunFolder`.

    Raises:
        RunFolderError: one line naming the folder, what is in it and the options.

    Example:
        >>> plan_run_folder(Path("/nonexistent/run"), None, force=False).aside is None
        True
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError("--out %s is a file, not a folder: give the run a folder of its own" % out)
    continuing = resume_path is not None and inside(resume_path, out)
    found = run_files(out)
    never_saved = auto and resume_path is None and set(found) <= BEFORE_CHECKPOINT
    if continuing or not found or never_saved:
        return RunFolder(out, continuing=continuing or never_saved)
    if not force:
        raise RunFolderError("--out %s holds an earlier run (%s): pass --resume auto to continue it, or --force to "
                             "move it aside to %s.old-<date>-<time> and start a new one, or give another --out"
                             % (out, ", ".join(found), out.name))
    for path in inputs:
        if inside(path, out):
            raise RunFolderError("%s is inside --out %s, which --force would move aside before the run reads it: "
                                 "copy it out of %s first, or give another --out" % (path, out, out))
    return RunFolder(out, aside=aside_name(out))


def config_differences(old, new):
    """``['section.key: old -> new', ...]`` for every key whose value differs.

    Example:
        >>> config_differences(defaults(), load_config(None, ["train.epochs=3"]))
        ['train.epochs: 100 -> 3']
    """
    return ["%s.%s: %r -> %r" % (section, name, old[section][name], new[section][name])
            for section in new for name in new[section] if old[section][name] != new[section][name]]


def resolve_config(args, resume_state, resume_path):
    """The run's config: --cfg and --set, or the checkpoint's with --set applied.

    With both --resume and --cfg the two must agree unless ``--override-config``: a silently
    replaced config (another width, another data set) would otherwise continue a different run.
    """
    saved = None
    if resume_state is not None:  # defaults first, so a checkpoint from before a new key still resolves
        saved = merge(defaults(), resume_state["config"], "config of %s" % resume_path)
    if args.cfg:
        cfg = load_config(args.cfg, args.set)
        changed = config_differences(saved, cfg) if saved is not None else []
        if changed and not args.override_config:
            raise ConfigError("--cfg %s%s differs from the config %s was trained with: %s. Add --override-config to "
                              "continue with the new values, or drop --cfg to keep the checkpoint's"
                              % (args.cfg, " with --set" if args.set else "", resume_path, "; ".join(changed)))
        return cfg, changed
    if saved is None:
        raise ConfigError("give --cfg FILE (or --resume CKPT to reuse a checkpoint's config)")
    return validate_config(saved, "config of %s" % resume_path, apply_overrides(saved, args.set)), []


# ----------------------------------------------------------------------------- the run's log.txt

def setup_logging(log, out, is_main):
    """Send the run's logger ``log`` to stderr and, on rank 0, to OUT/log.txt; other ranks only report warnings."""
    log.handlers.clear()
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(stream)
    if is_main:
        handler = logging.FileHandler(out / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(handler)


def close_log_file(log):
    """Close OUT/log.txt (so a failed run can remove it); stderr keeps logging."""
    for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        handler.close()
        log.removeHandler(handler)
