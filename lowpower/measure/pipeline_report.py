"""The report of ``bench pipeline``: the Markdown table, the CSV of raw numbers and the plot.

``lowpower.measure.pipeline`` measures the steps; this module only formats what it measured. The
columns are explained in ``lowpower bench pipeline --help``.

Example:
    >>> print(write_report(rows, "runs/pipeline/report", "lowpower bench pipeline ..."))  # doctest: +SKIP
    | step | package | params (M) | ...
"""
from pathlib import Path

from lowpower.measure.report import pyplot, save_figure, write_csv
from lowpower.safe.write import atomic_output

COLUMNS = ("step", "package", "params (M)", "GFLOPs", "weights.npz MB", "pyz MB", "forward ms (median, min-max)",
           "x base", "package ms/img", "x base", "network ms/img", "post-process ms/img", "val mean Dice",
           "test mean Dice")
CSV_FIELDS = ("label", "checkpoint", "precision", "engine", "params", "gflops", "npz_bytes", "pyz_bytes",
              "forward_median_ms", "forward_min_ms", "forward_max_ms", "forward_ratio", "package_ms_per_image",
              "package_ratio", "network_ms_per_image", "postprocess_ms_per_image", "val_mean_dice",
              "test_mean_dice")


def number(value, fmt):
    """``value`` formatted, or '-' for a figure that is missing (None) or undefined (NaN).

    Example:
        >>> number(0.5, "{:.2f}"), number(float("nan"), "{:.2f}")
        ('0.50', '-')
    """
    return "-" if value is None or value != value else fmt.format(value)


def table_cells(row):
    """The Markdown cells of one row (see COLUMNS)."""
    forward = "{} ({}-{})".format(number(row["forward_median_ms"], "{:.1f}"), number(row["forward_min_ms"], "{:.1f}"),
                                  number(row["forward_max_ms"], "{:.1f}"))
    return [row["label"], row["precision"] + (" ({})".format(row["engine"]) if row["engine"] else ""),
            number(row["params"] / 1e6, "{:.3f}"), number(row["gflops"], "{:.3f}"),
            number(row["npz_bytes"] / 1e6, "{:.3f}"), number(row["pyz_bytes"] / 1e6, "{:.3f}"), forward,
            number(row["forward_ratio"], "{:.2f}"), number(row["package_ms_per_image"], "{:.1f}"),
            number(row["package_ratio"], "{:.2f}"), number(row["network_ms_per_image"], "{:.1f}"),
            number(row["postprocess_ms_per_image"], "{:.1f}"), number(row["val_mean_dice"], "{:.4f}"),
            number(row["test_mean_dice"], "{:.4f}")]


def format_table(rows):
    """The Markdown table, one line per step in order; ratios are against the first step."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|" + "---:|" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def plot(path, rows, references=()):
    """Test mean Dice against package ms/image, one labelled point per step, as a PNG: the steps
    joined in order, the ``references`` (labels, e.g. a student trained without a teacher) apart."""
    plt = pyplot()

    xs = [row["package_ms_per_image"] for row in rows]
    ys = [float("nan") if row["test_mean_dice"] is None else row["test_mean_dice"] for row in rows]
    chain = [index for index, row in enumerate(rows) if row["label"] not in references]
    aside = [index for index, row in enumerate(rows) if row["label"] in references]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot([xs[i] for i in chain], [ys[i] for i in chain], "o-", color="tab:blue", label="pipeline steps, in order")
    if aside:
        axes.plot([xs[i] for i in aside], [ys[i] for i in aside], "s", color="tab:gray", label="references")
    axes.plot(xs[:1], ys[:1], "*", color="tab:red", markersize=16, label="baseline ({})".format(rows[0]["label"]))
    for row, x, y in zip(rows, xs, ys):
        axes.annotate(row["label"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.set_xlabel("package model ms per image (printed seconds / images)")
    axes.set_ylabel("test mean Dice (package masks)")
    axes.set_title("Compression pipeline: Dice vs speed", fontsize=10)
    axes.grid(alpha=0.3)
    axes.margins(0.15)  # room for the labels of the corner points
    axes.legend(loc="best")
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)


def write_report(rows, out, command, references=()):
    """pipeline.csv, pipeline.md (the command and the table) and pipeline.png in ``out``, each atomically;
    returns the table.

    The CSV comes first: its header is what marks the folder's report as this command's on a rerun
    (``lowpower.measure.report.check_result_folder``). ``references`` are labels plotted apart from the
    pipeline's line (see ``plot``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = format_table(rows)
    write_csv(out / "pipeline.csv", rows, CSV_FIELDS)
    with atomic_output(out / "pipeline.md") as temp:
        temp.write_text("`{}`\n\n{}\n\nRatios (x base) are against {}; see `lowpower bench pipeline --help` for "
                        "what each column measures.\n".format(command, text, rows[0]["label"]))
    plot(out / "pipeline.png", rows, references)
    return text
