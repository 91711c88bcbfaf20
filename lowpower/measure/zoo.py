"""The zoo measured as a team would choose: one markdown table from what ``make zoo`` measured.

    make zoo                                   # trains, quantizes, packages and measures (about 1.5 h here)
    lowpower bench zoo runs/zoo --md docs/zoo_table.md

``make zoo`` trains every network of ``ZOO`` with one shared recipe (configs/synthetic/zoo.yaml) into
``runs/zoo/ARCH``, converts each ``best.pt`` to int8 (``lowpower quantize ptq``, x86 engine), runs every
package on the synthetic test split in turns (``lowpower bench pareto``: the referee's model time and
mean Dice). This command reads those files and joins them into one row per network:

- val mean Dice: the best validation of the run (``best.pt``'s metrics);
- test mean Dice and ms per image of the fp32 and int8 packages (``pareto/pareto.csv``);
- parameters of the deployed network (less the modules only auxiliary outputs use) and GFLOPs at 512
  and 256, counted here on the network ``best.pt`` builds (``lowpower.measure.flops``: convolutions and
  matrix products, 2 FLOPs per multiply-add; papers quote multiply-adds, half these figures).

A network whose int8 conversion was refused shows the reason instead of its int8 figures.

Example:
    >>> rows = zoo_rows("runs/zoo")  # doctest: +SKIP
"""
import argparse
import csv
from pathlib import Path

import torch

from lowpower import checkpoint as ckpt
from lowpower.measure.flops import count_flops
from lowpower.measure.report import add_markdown_output, print_table
from lowpower.safe.write import check_output

# The networks ``make zoo`` trains, in the order of the table: the four real-time networks of issue 24,
# then the ones a team had before them.
ZOO = ("pidnet_s", "ddrnet23_slim", "ppliteseg_t", "topformer_t", "bisenetv2", "lraspp_mbv3_small",
       "fanet_r18_sample", "unet")
HEADER = ("| network | val mean Dice | test Dice fp32 | ms/img fp32 | test Dice int8 | ms/img int8 | params (M) "
          "| GFLOPs 512 | GFLOPs 256 |\n|---|---|---|---|---|---|---|---|---|")


def read_csv(path):
    """Rows of a CSV file as dicts; [] when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def last_line(path):
    """The last non-empty line of a text file (a refused command's one-line error), or ''."""
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def deployed_parameters(model):
    """Parameters of ``model`` less those under its class's ``aux_modules`` (heads only training uses)."""
    aux = tuple(name + "." for name in getattr(type(model), "aux_modules", ()))
    return sum(p.numel() for name, p in model.named_parameters() if not (aux and name.startswith(aux)))


def run_figures(run):
    """``{val_dice, params, gflops_512, gflops_256}`` of a run folder's ``best.pt``; {} without one."""
    path = Path(run) / "best.pt"
    if not path.is_file():
        return {}
    state = ckpt.load_checkpoint(path)
    model = ckpt.build_model(state).eval()
    figures = {"val_dice": state.get("best_mean_dice"), "params": deployed_parameters(model)}
    for size in (512, 256):
        figures["gflops_%d" % size] = count_flops(model, torch.zeros(1, 3, size, size)) / 1e9
    return figures


def number(value, form):
    """``value`` formatted, or an em dash when it was not measured.

    Example:
        >>> number("0.71234", "{:.3f}"), number(None, "{:.3f}")
        ('0.712', '—')
    """
    if value in (None, ""):
        return "—"
    return form.format(float(value))


def zoo_rows(root, names=ZOO):
    """One dict per network in ``names`` that has a run folder under ``root``."""
    root = Path(root)
    pareto = {row["name"]: row for row in read_csv(root / "pareto" / "pareto.csv")}
    rows = []
    for name in names:
        if not (root / name).is_dir():
            continue
        fp32, int8 = pareto.get(name + "/best", {}), pareto.get(name + "/int8", {})
        refused = root / name / "int8_refused.txt"
        row = {"val_dice": None, "params": None, "gflops_512": None, "gflops_256": None}
        row.update(run_figures(root / name))
        row.update({
            "name": name,
            "dice_fp32": fp32.get("mean_dice"), "ms_fp32": fp32.get("ms_per_image"),
            "dice_int8": int8.get("mean_dice"), "ms_int8": int8.get("ms_per_image"),
            "int8_refused": last_line(refused) if refused.is_file() else None,
        })
        rows.append(row)
    return rows


def markdown(rows):
    """The table: one line per row of :func:`zoo_rows`.

    Example:
        >>> print(markdown([{"name": "unet", "val_dice": 0.7, "dice_fp32": "0.71", "ms_fp32": "20",
        ...                  "dice_int8": None, "ms_int8": None, "int8_refused": "no int8",
        ...                  "params": "1940000", "gflops_512": "30", "gflops_256": "7.5"}]).splitlines()[-1])
        | unet | 0.700 | 0.710 | 20.0 | no int8 | — | 1.94 | 30.0 | 7.5 |
    """
    lines = [HEADER]
    for row in rows:
        int8_dice = row["int8_refused"] if row["int8_refused"] else number(row["dice_int8"], "{:.3f}")
        params = number(float(row["params"]) / 1e6 if row["params"] not in (None, "") else None, "{:.2f}")
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            row["name"], number(row["val_dice"], "{:.3f}"), number(row["dice_fp32"], "{:.3f}"),
            number(row["ms_fp32"], "{:.1f}"), int8_dice, number(row["ms_int8"], "{:.1f}"), params,
            number(row["gflops_512"], "{:.1f}"), number(row["gflops_256"], "{:.1f}")))
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower bench zoo", description=__doc__.split("Example:")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default="runs/zoo", help="the folder make zoo wrote (default runs/zoo)")
    add_markdown_output(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.md:
        check_output(args.md, force=args.force, what="--md")
    text = markdown(zoo_rows(args.root))
    print_table(text, args.md)
    return 0
