"""Training curves: loss and validation mean Dice per epoch, drawn to a PNG with matplotlib (Agg).

Example:
    >>> plot_curves([{"epoch": 1, "loss": 1.2, "mean_dice": 0.3, "miou": 0.2}], "curves.png")  # doctest: +SKIP
"""
import math

import matplotlib

matplotlib.use("Agg")  # no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

LOSS_TERMS = ("task_loss", "kd_loss", "cwd_loss", "feature_loss")  # drawn beside the total when present


def plot_curves(history, path, title=None):
    """Draw ``history`` (records with epoch, loss and, when validated, mean_dice and miou; distillation
    terms such as kd_loss when present) to ``path``."""
    epochs = [record["epoch"] for record in history]
    losses = [record.get("loss", float("nan")) for record in history]
    scored = [r for r in history if r.get("mean_dice") is not None and not math.isnan(r["mean_dice"])]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(epochs, losses, marker=".", color="tab:red", label="total")
    terms = [key for key in LOSS_TERMS if any(key in record for record in history)]
    for key in terms:  # distillation runs log each term (lowpower.train.distill); unweighted values
        left.plot(epochs, [record.get(key, float("nan")) for record in history], linestyle="--", label=key)
    if terms:
        left.legend(loc="upper right", fontsize="small")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    left.grid(alpha=0.3)
    right.plot([r["epoch"] for r in scored], [r["mean_dice"] for r in scored], marker="o",
               label="mean Dice (referee rule)")
    right.plot([r["epoch"] for r in scored], [r["miou"] for r in scored], marker=".", label="mIoU")
    right.set_xlabel("epoch")
    right.set_ylabel("validation")
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    right.legend(loc="best")  # low scores of short runs sat under a lower-right legend
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
