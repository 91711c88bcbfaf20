"""Run configuration: one YAML file per run, one level of sections, checked against a schema.

A config file looks like::

    model:
      arch: unet
      kwargs: {base_width: 16, depth: 4}
    train:
      epochs: 30

Every key is addressed as ``section.key`` (``train.epochs``); ``model.kwargs`` is the one open
mapping and is checked against the model builder's own arguments instead. Anything else that is
not in :data:`lowpower.config.schema.SCHEMA` is an error that lists the valid keys. Command-line ``--set`` overrides are
applied after the file, so they win.

Example:
    >>> cfg = load_config("configs/synthetic/demo.yaml", ["train.epochs=1"])  # doctest: +SKIP
    >>> cfg["train"]["epochs"]                                                # doctest: +SKIP
    1
"""
import copy
import difflib
import re
from pathlib import Path

import yaml

import networks
from lowpower.config.schema import OPTIONAL, SCHEMA, Key  # noqa: F401  (re-exported)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message says how to fix it."""


class Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as ``1e-3`` as numbers.

    PyYAML implements YAML 1.1, whose float rule needs a dot (``1.0e-3``), so ``lr: 1e-3`` -- the
    way people write it -- would be the *string* '1e-3'. The extra resolver below is YAML 1.2's
    float pattern restricted to forms with an exponent; the int resolver is tried first, so plain
    integers stay integers.

    Example:
        >>> yaml.load("lr: 1e-3", Loader=Loader)
        {'lr': 0.001}
    """


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(text):
    """Parse YAML text with :class:`Loader` (safe, and ``1e-3`` is a float)."""
    return yaml.load(text, Loader=Loader)


def defaults():
    """The config every key of which has its default value.

    Example:
        >>> defaults()["train"]["optimizer"]
        'sgd'
    """
    return {section: {name: copy.deepcopy(key.default) for name, key in keys.items()}
            for section, keys in SCHEMA.items()}


def valid_keys():
    """All ``section.key`` names, in schema order."""
    return ["%s.%s" % (section, name) for section, keys in SCHEMA.items() for name in keys]


def _unknown_key_error(dotted, where):
    close = difflib.get_close_matches(dotted, valid_keys(), n=1)
    hint = " Did you mean '%s'?" % close[0] if close else ""
    return ConfigError("%s: unknown config key '%s'.%s Valid keys: %s"
                       % (where, dotted, hint, ", ".join(valid_keys())))


def _type_name(types):
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
             list: "a list", dict: "a mapping", OPTIONAL: "null"}
    return " or ".join(names[t] for t in types)


def check_value(section, name, value, where):
    """Return ``value`` converted to the key's type, or raise a ConfigError naming the key."""
    key = SCHEMA[section][name]
    dotted = "%s.%s" % (section, name)
    if value is None and OPTIONAL in key.types:
        return None
    if float in key.types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool))
             for t in key.types if t is not OPTIONAL)
    if not ok:
        raise ConfigError("%s: %s must be %s, got %r" % (where, dotted, _type_name(key.types), value))
    if key.choices and value not in key.choices:
        raise ConfigError("%s: %s must be one of %s, got %r"
                          % (where, dotted, ", ".join(key.choices), value))
    for bound, broken, rule in ((key.low, lambda b: value < b, "at least"), (key.high, lambda b: value > b, "at most"),
                                (key.above, lambda b: value <= b, "greater than")):
        if bound is not None and isinstance(value, (int, float)) and broken(bound):
            raise ConfigError("%s: %s must be %s %s, got %r" % (where, dotted, rule, bound, value))
    return value


def merge(cfg, update, where):
    """Check ``update`` (a two-level mapping) against the schema and write it into ``cfg``."""
    if not isinstance(update, dict):
        raise ConfigError("%s: a config is a mapping of sections (%s), got %s"
                          % (where, ", ".join(SCHEMA), type(update).__name__))
    for section, values in update.items():
        if section not in SCHEMA:
            raise _unknown_key_error(str(section), where)
        if not isinstance(values, dict):
            raise ConfigError("%s: section '%s' must be a mapping of keys, got %r" % (where, section, values))
        for name, value in values.items():
            if name not in SCHEMA[section]:
                raise _unknown_key_error("%s.%s" % (section, name), where)
            cfg[section][name] = check_value(section, name, value, where)
    return cfg


def apply_override(cfg, text):
    """Apply one ``section.key=value`` override (value in YAML); ``model.kwargs.NAME=value`` sets
    one builder argument and keeps the others.

    Example:
        >>> apply_override(defaults(), "train.lr=0.05")["train"]["lr"]
        0.05
    """
    if "=" not in text:
        raise ConfigError("--set %s: expected section.key=value, e.g. train.epochs=5" % text)
    dotted, raw = text.split("=", 1)
    dotted = dotted.strip()
    parts = dotted.split(".")
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError("--set %s: the value is not valid YAML (%s)" % (text, str(error).splitlines()[0])) from None
    if len(parts) == 3 and parts[:2] == ["model", "kwargs"]:
        cfg["model"]["kwargs"][parts[2]] = value
        return cfg
    if len(parts) != 2:
        raise _unknown_key_error(dotted, "--set")
    return merge(cfg, {parts[0]: {parts[1]: value}}, "--set %s" % text)


def _blame(where, sources, *keys):
    """Who set ``keys``: the ``--set`` argument that did (the last one wins), else ``where``.

    So an impossible value typed on the command line is blamed on that argument, not on the file.
    """
    for dotted in keys:
        for name in (dotted, dotted.rsplit(".", 1)[0]):  # model.kwargs.depth may come from model.kwargs={..}
            if sources and name in sources:
                return sources[name]
    return where


def check_model_kwargs(cfg, where, sources=None):
    """Check model.arch and model.kwargs against the registry and the builder's signature.

    Args:
        cfg: resolved config.
        where: what to blame by default (the file name).
        sources: ``{section.key: '--set ...'}`` for keys set on the command line.
    """
    arch = cfg["model"]["arch"]
    if arch not in networks.MODELS:
        close = difflib.get_close_matches(arch, networks.list_models(), n=1)
        hint = " Did you mean '%s'?" % close[0] if close else ""
        raise ConfigError("%s: model.arch '%s' is not a registered network.%s Valid names: %s"
                          % (_blame(where, sources, "model.arch"), arch, hint, ", ".join(networks.list_models())))
    accepted = [a for a in networks.builder_arguments(arch) if a != "num_classes"]
    unknown = sorted(set(cfg["model"]["kwargs"]) - set(accepted))
    if unknown:
        keys = ["model.kwargs.%s" % name for name in unknown]
        raise ConfigError("%s: model.kwargs has %s, which %s does not take; it accepts: %s"
                          % (_blame(where, sources, *keys), ", ".join(unknown), arch, ", ".join(accepted)))


def check_consistency(cfg, where, sources=None):
    """Value ranges and cross-key rules the per-key types cannot express.

    Args:
        cfg: resolved config.
        where: what to blame by default (the file name).
        sources: ``{section.key: '--set ...'}`` for keys set on the command line; an error about
            such a key names that argument instead of ``where``.

    Example:
        >>> check_consistency(load_config(None, ["train.lr=0.1"]), "x.yaml")
    """
    data, train = cfg["data"], cfg["train"]
    if not data["scale_min"] <= data["scale_max"]:
        raise ConfigError("%s: need 0 < data.scale_min <= data.scale_max, got %s and %s"
                          % (_blame(where, sources, "data.scale_min", "data.scale_max"),
                             data["scale_min"], data["scale_max"]))
    if data["dataset"] == "cityscapes" and data["num_classes"] != 19:
        raise ConfigError("%s: Cityscapes has 19 evaluated classes; set data.num_classes=19, got %d"
                          % (_blame(where, sources, "data.num_classes", "data.dataset"), data["num_classes"]))
    if data["dataset"] == "cityscapes" and data["cache"]:
        # The cache squares images for small data sets; Cityscapes keeps its 1:2 frames.
        raise ConfigError("%s: data.cache is for small square data sets; set data.cache=false for Cityscapes"
                          % _blame(where, sources, "data.cache", "data.dataset"))
    if not 0 <= cfg["eval"]["min_class_area"] < 1:
        raise ConfigError("%s: eval.min_class_area is a share of the image in [0, 1), got %s"
                          % (_blame(where, sources, "eval.min_class_area"), cfg["eval"]["min_class_area"]))
    weights = train["class_weights"]
    if isinstance(weights, str) and weights != "inverse_sqrt":
        raise ConfigError("%s: train.class_weights must be null, a list or 'inverse_sqrt', got %r"
                          % (_blame(where, sources, "train.class_weights"), weights))
    if isinstance(weights, list) and len(weights) != data["num_classes"]:
        raise ConfigError("%s: train.class_weights has %d values for %d classes (data.num_classes)"
                          % (_blame(where, sources, "train.class_weights", "data.num_classes"),
                             len(weights), data["num_classes"]))
    if train["ema"] and cfg["quant"]["qat"]:
        # An average of fake-quant observers' scales is no range any of them saw; QAT's best_int8.pt
        # is converted from the raw weights' observers.
        raise ConfigError("%s: train.ema and quant.qat do not combine; set train.ema=false for a QAT run"
                          % _blame(where, sources, "train.ema", "quant.qat"))
    check_fixed_point(cfg, where, sources)


def check_fixed_point(cfg, where, sources=None):
    """``quant.fixed_point`` trains alone: not with int8 QAT, not in mixed precision, not with an EMA."""
    if not cfg["quant"]["fixed_point"]:
        return
    if cfg["quant"]["qat"]:
        raise ConfigError("%s: quant.fixed_point and quant.qat are two fake quantizations; set one of them"
                          % _blame(where, sources, "quant.fixed_point", "quant.qat"))
    if cfg["train"]["amp"]:  # bf16/fp16 autocast would round the fixed-point grid away
        raise ConfigError("%s: quant.fixed_point trains in fp32; set train.amp=false"
                          % _blame(where, sources, "train.amp", "quant.fixed_point"))
    if cfg["train"]["ema"]:  # an average of learned steps and ranges is no grid the weights were trained on
        raise ConfigError("%s: train.ema and quant.fixed_point do not combine; set train.ema=false"
                          % _blame(where, sources, "train.ema", "quant.fixed_point"))


def check_aux_weights(cfg, where, sources=None):
    """``loss.aux_weights`` names heads that ``model.arch`` has, with weights >= 0."""
    weights = cfg["loss"]["aux_weights"]
    if not weights:
        return
    arch = cfg["model"]["arch"]
    heads = [name for name, _ in getattr(networks.model_class(arch), "aux_heads", ())]
    unknown = sorted(str(name) for name in set(weights) - set(heads))
    if unknown:
        raise ConfigError("%s: loss.aux_weights names %s, which %s does not return; its auxiliary outputs: %s"
                          % (_blame(where, sources, "loss.aux_weights"), ", ".join(unknown), arch,
                             ", ".join(heads) or "none (set loss.aux_weights={})"))
    bad = sorted(str(name) for name, weight in weights.items()
                 if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0)
    if bad:
        raise ConfigError("%s: loss.aux_weights of %s must be numbers >= 0"
                          % (_blame(where, sources, "loss.aux_weights"), ", ".join(bad)))


def apply_overrides(cfg, overrides):
    """Apply ``section.key=value`` strings in order; returns ``{section.key: '--set TEXT'}``.

    The returned map lets :func:`check_consistency` blame the argument that set a bad value.
    """
    sources = {}
    for text in overrides:
        apply_override(cfg, text)
        sources[text.split("=", 1)[0].strip()] = "--set %s" % text
    return sources


def validate(cfg, where, sources=None):
    """Check the model arguments and the value rules of a resolved config (see above)."""
    check_model_kwargs(cfg, where, sources)
    check_consistency(cfg, where, sources)
    check_aux_weights(cfg, where, sources)
    return cfg


def load_config(path=None, overrides=()):
    """Read a config file, apply ``section.key=value`` overrides and validate the result.

    Args:
        path: YAML file, or None for the defaults alone.
        overrides: iterable of ``section.key=value`` strings; they win over the file.

    Returns:
        The resolved config, a dict of sections with every key present.

    Raises:
        ConfigError: unknown key (the message lists the valid ones), wrong type, bad value.

    Example:
        >>> load_config(None, ["train.epochs=3"])["train"]["epochs"]
        3
    """
    cfg = defaults()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config file %s does not exist (see configs/ for examples)" % path)
        try:
            content = read_yaml(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError("%s is not valid YAML: %s" % (path, error)) from None
        merge(cfg, content or {}, str(path))
    sources = apply_overrides(cfg, overrides)
    return validate(cfg, str(path) if path else "config", sources)


def save_config(cfg, path):
    """Write the resolved config as YAML (the file ``load_config`` reads back to the same dict)."""
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))


def reference_markdown():
    """The config reference as a Markdown table (docs/training.md's section is this text)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            default = yaml.safe_dump(key.default, default_flow_style=True).strip()
            default = default[:-4].strip() if default.endswith("...") else default
            meaning = key.help + (" (one of: %s)" % ", ".join(key.choices) if key.choices else "")
            lines.append("| `%s.%s` | `%s` | %s |" % (section, name, default, meaning))
    return "\n".join(lines)


README_MARKERS = ("<!-- config-reference:begin -->", "<!-- config-reference:end -->")


def update_readme(path):
    """Rewrite the config reference between the markers of ``path`` (docs/training.md); True when it changed."""
    text = Path(path).read_text()
    begin, end = README_MARKERS
    if begin not in text or end not in text:
        raise ConfigError("%s has no %s ... %s markers" % (path, begin, end))
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    updated = head + begin + "\n" + reference_markdown() + "\n" + end + tail
    Path(path).write_text(updated)
    return updated != text


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="lowpower config",
                                     description="Print the config reference (Markdown), "
                                                 "or write it into docs/training.md.")
    parser.add_argument("--update-readme", metavar="FILE", help="rewrite the section between the markers of FILE")
    args = parser.parse_args(argv)
    if args.update_readme:
        changed = update_readme(args.update_readme)
        print("%s: config reference %s" % (args.update_readme, "updated" if changed else "already current"))
    else:
        print(reference_markdown())
