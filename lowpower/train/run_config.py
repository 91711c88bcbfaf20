"""Where a training run lives and which config it runs with: ``--out``, ``--resume`` and ``--cfg`` /
``--set`` resolved against a checkpoint's own config, so a resumed run never silently continues with
another network or data set.

Example:
    >>> config_differences(defaults(), load_config(None, ["train.epochs=3"]))
    ['train.epochs: 100 -> 3']
"""
from pathlib import Path

from lowpower.config import ConfigError, apply_overrides, defaults, load_config, merge
from lowpower.config import validate as validate_config
from lowpower.paths import REPO_ROOT


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
