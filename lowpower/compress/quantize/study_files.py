"""The files of ``lowpower quantize study`` in its ``--out`` folder: study.csv (its cache), study.md, study.png.

A row of ``study.csv`` is keyed by the sha256 of the checkpoint file and every setting that changes its
numbers (:data:`SETTINGS`), so a rerun continues a killed study and another checkpoint's rows stay
apart. :func:`check_outputs` decides, before any work, whether the folder's files may be written.

Example:
    >>> csv_format("/no/such/study.csv")
    'missing'
"""
import csv
import os
from pathlib import Path

from lowpower.compress.quantize.fixed_point import FLOAT_BITS
from lowpower.compress.quantize.study_train import is_float, last_quarter_gain, run_folder
from lowpower.measure.report import pyplot
from lowpower.safe.write import OutputError, atomic_output, check_output, same_file

# A row's key: the checkpoint's bytes and every setting that changes the row's numbers. Settings that
# do not apply to a row are empty (lr and calib_batches of the fp32 row), so the fp32 row of one
# checkpoint is shared by every run of the study on it.
SETTINGS = ["checkpoint_sha256", "data", "fold_bn", "calib_batches", "qat_epochs", "lr", "weight_bits", "act_bits",
            "scheme", "edge_bits"]
# Settings a study.csv written before they existed lacks, and the value its rows were measured with.
ADDED_SETTINGS = {"scheme": "range", "edge_bits": ""}
RESULTS = ["val_mean_dice", "val_miou", "dice_drop", "weight_memory_kib", "weight_memory_ratio",
           "act_memory_kib_per_image", "act_memory_ratio", "seconds"]
FIELDS = SETTINGS + ["checkpoint"] + RESULTS
# The header before the scheme and edge bits were settings: its rows are this study's, with their defaults.
BEFORE_SCHEMES = [name for name in FIELDS if name not in ADDED_SETTINGS]
# The header of the study.csv lowpower wrote before rows were keyed by checkpoint: its rows cannot be
# told apart by checkpoint, so they are never reused.
OLD_FIELDS = ["weight_bits", "act_bits", "qat_epochs"] + RESULTS
OUTPUTS = ("study.csv", "study.md", "study.png")


def csv_format(path):
    """What ``path`` holds: "missing", "folder", "study" (this study's header), "old" (the header of the
    study before rows were keyed by checkpoint) or "foreign" (anything else).

    Example:
        >>> csv_format("/no/such/study.csv")
        'missing'
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "folder"
    try:
        with open(path, newline="") as handle:
            header = next(csv.reader([handle.readline(4096)]), None)  # a bounded read: any file may be here
    except (OSError, UnicodeDecodeError, csv.Error):
        return "foreign"
    return {tuple(FIELDS): "study", tuple(BEFORE_SCHEMES): "study", tuple(OLD_FIELDS): "old"}.get(
        tuple(header or ()), "foreign")


def check_outputs(args, out):
    """Refuse, before any work, an ``--out`` whose files would overwrite the checkpoint or a user's file.

    ``--out`` must be a folder (or not exist yet). Its ``study.csv`` is the study's cache when this study
    wrote it (its header): its rows are kept and extended, and ``study.md`` / ``study.png`` beside it are
    regenerated. Any other ``study.csv``, and a ``study.md`` or ``study.png`` without one, is replaced
    only with ``--force``; the checkpoint never.

    Args:
        args: the parsed arguments (``checkpoint``, ``force``).
        out: the output folder.

    Returns:
        True when ``out/study.csv`` is this study's own (read its rows), False when the study starts afresh.

    Raises:
        OutputError: one line naming the file and the fix.

    Example:
        >>> check_outputs(parse_args(["best.pt", "--out", "best.pt"]), Path("best.pt"))  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        lowpower.safe.write.OutputError: --out best.pt is the checkpoint, not a folder; ...
    """
    checkpoint = Path(args.checkpoint)
    if out.exists() and not out.is_dir():
        what = "the checkpoint" if same_file(out, checkpoint) else "a file"
        raise OutputError("--out %s is %s, not a folder; give a folder for study.csv, study.md and study.png, "
                          "e.g. %s" % (out, what, checkpoint.absolute().parent / "fixed_point"))
    csv_path = out / "study.csv"
    found = csv_format(csv_path)
    if found == "old" and not args.force:
        raise OutputError("%s is an older study's, without checkpoint hashes, so its rows cannot be matched to a "
                          "checkpoint; move it aside, give another --out, or pass --force to replace it" % csv_path)
    if found == "foreign" and not args.force:
        raise OutputError("%s exists and this study did not write it (its header differs); give another --out, "
                          "or pass --force to replace it" % csv_path)
    own = found == "study"
    for name in OUTPUTS:
        check_output(out / name, inputs=[checkpoint], force=args.force or own)
    return own


def row_key(row):
    """A row's key in study.csv: its settings as strings (see :data:`SETTINGS`)."""
    return tuple(str(row[name]) for name in SETTINGS)


def read_rows(path):
    """Every row of this study's CSV at ``path``, in file order; [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [dict(ADDED_SETTINGS, **row) for row in csv.DictReader(handle)]


def write_rows(path, rows):
    """Rewrite the CSV atomically with every row (other checkpoints' too), flushed to disk first."""
    with atomic_output(path) as temp:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not land before the bytes do


def write_markdown(rows, path, heading, gains=None):
    """``study.md``: ``heading``, then the rows as a table, fp32 first. ``gains``: {row key: how much the
    val mean Dice of a trained row's run rose in its last quarter} (``study_train.last_quarter_gain``)."""
    gains = gains or {}
    lines = [heading, "", "| scheme | weight bits | act bits | edge bits | QAT epochs | QAT lr | calib batches "
             "| val mean Dice | Dice - fp32 | weight memory KiB (x less) | activation memory KiB/image (x less) "
             "| minutes | Dice gain, last quarter |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        gain = gains.get(row_key(row))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %.4f | %+.4f | %.1f (%.2fx) | %.1f (%.1fx) | %.1f | %s |" % (
            "fp32" if is_float(row) else row["scheme"], row["weight_bits"], row["act_bits"], row["edge_bits"] or "-",
            row["qat_epochs"],
            "%g" % float(row["lr"]) if row["lr"] else "-", row["calib_batches"] or "-",
            float(row["val_mean_dice"]), 0.0 - float(row["dice_drop"]), float(row["weight_memory_kib"]),
            float(row["weight_memory_ratio"]), float(row["act_memory_kib_per_image"]), float(row["act_memory_ratio"]),
            float(row["seconds"]) / 60, "-" if gain is None else "%+.4f" % gain))
    with atomic_output(path) as temp:
        temp.write_text("\n".join(lines) + "\n")


def line_label(scheme, qat, lr, calib, edge=""):
    """The legend of one line of the plot."""
    training = "trained %s epochs, lr %g" % (qat, float(lr)) if int(qat) else "calibrated on %s batches" % calib
    edges = ", edges float" if edge and int(edge) >= FLOAT_BITS else ", edges %s bit" % edge if edge else ""
    return "%s%s, %s" % (scheme, edges, training)


def plot_rows(rows, path, title):
    """``study.png``: val mean Dice against weight memory, one line per scheme (and training), each point
    labelled with its bit pair; fp32 dashed."""
    plt = pyplot()

    figure, axes = plt.subplots(figsize=(7.2, 4.6))
    quantized = [r for r in rows if not is_float(r)]

    def settings(row):  # a CSV may hold rows of several runs of the study
        return row["scheme"], row["qat_epochs"], row["lr"], row["calib_batches"], row["edge_bits"]

    for key in sorted({settings(r) for r in quantized}):
        line = sorted((float(r["weight_memory_kib"]), float(r["val_mean_dice"]), r["weight_bits"], r["act_bits"])
                      for r in quantized if settings(r) == key)
        drawn = axes.plot([m for m, *_ in line], [d for _, d, *_ in line], marker="o",
                          linestyle="-" if int(key[1]) else ":", label=line_label(*key))
        for memory, dice, weight, act in line:
            axes.annotate("w%s/a%s" % (weight, act), (memory, dice), fontsize=6, color=drawn[0].get_color(),
                          xytext=(3, 3), textcoords="offset points")
    for row in rows:
        if row not in quantized:
            trained = ", trained %s epochs" % row["qat_epochs"] if int(row["qat_epochs"]) else ""
            axes.axhline(float(row["val_mean_dice"]), color="black", linestyle="--", label="fp32" + trained)
    axes.set_xlabel("weight memory, KiB")
    axes.set_ylabel("val mean Dice (referee rule)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    with atomic_output(path) as temp:
        figure.savefig(temp, dpi=100, format="png")  # the temporary name ends in .tmp, so name the format
    plt.close(figure)


def write_reports(rows, keys, out, checkpoint):
    """``study.md`` and ``study.png`` from the CSV's rows of this network (checkpoint, data, BatchNorm
    folding): this sweep's (``keys``) in its order, then the rows earlier runs left (another fine-tune,
    other bits). Rows of other checkpoints stay in study.csv only."""
    by_key = {row_key(row): row for row in rows}
    network = by_key[keys[0]]  # the fp32 row, measured first
    same = [row for row in rows if all(row[name] == network[name] for name in ("checkpoint_sha256", "data", "fold_bn"))]
    shown = [by_key[key] for key in keys if key in by_key] + [row for row in same if row_key(row) not in keys]
    heading = "Fixed-point study of `%s` (sha256 %s...), data `%s`, BatchNorm %s; every run's rows: study.csv" % (
        checkpoint, network["checkpoint_sha256"][:12], network["data"],
        "folded" if network["fold_bn"] == "1" else "kept")
    gains = {row_key(row): last_quarter_gain(run_folder(out, {name: row[name] for name in SETTINGS}))
             for row in shown if int(row["qat_epochs"])}
    write_markdown(shown, out / "study.md", heading, gains)
    plot_rows(shown, out / "study.png", "%s: fixed-point fake quantization, val split" % checkpoint)
