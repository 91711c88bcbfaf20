"""`lowpower bench zoo` joins make zoo's files into one row per network: val Dice from best.pt, package
Dice and ms from pareto.csv, counts from the network best.pt builds, and a refused int8's reason."""
import csv
import shutil

import torch

from lowpower import checkpoint as ckpt
from lowpower.measure.flops import count_flops
from lowpower.measure.zoo import deployed_parameters, main, markdown, zoo_rows


def write_pareto(path, rows):
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["name", "mean_dice", "ms_per_image"])
        writer.writeheader()
        writer.writerows(rows)


def test_rows_join_the_run_the_pareto_table_and_the_refusal(float_checkpoint, tmp_path):
    for name in ("unet", "bisenetv2"):
        (tmp_path / name).mkdir()
        shutil.copy(float_checkpoint, tmp_path / name / "best.pt")
    (tmp_path / "bisenetv2" / "int8_refused.txt").write_text("some warning\nlowpower: error: no int8 here\n")
    write_pareto(tmp_path / "pareto" / "pareto.csv", [
        {"name": "unet/best", "mean_dice": "0.61", "ms_per_image": "12.5"},
        {"name": "unet/int8", "mean_dice": "0.60", "ms_per_image": "6.25"}])
    rows = zoo_rows(tmp_path, names=("unet", "bisenetv2", "pidnet_s"))  # pidnet_s: no run folder, no row
    assert [row["name"] for row in rows] == ["unet", "bisenetv2"]
    state = ckpt.load_checkpoint(float_checkpoint)
    model = ckpt.build_model(state).eval()
    unet = rows[0]
    assert unet["val_dice"] == state["best_mean_dice"]
    assert unet["params"] == sum(p.numel() for p in model.parameters()) == deployed_parameters(model)
    assert unet["gflops_256"] == count_flops(model, torch.zeros(1, 3, 256, 256)) / 1e9
    assert (unet["dice_fp32"], unet["ms_int8"]) == ("0.61", "6.25")
    assert rows[1]["int8_refused"] == "lowpower: error: no int8 here" and rows[1]["dice_int8"] is None
    lines = markdown(rows).splitlines()
    assert lines[2].startswith("| unet | %.3f | 0.610 | 12.5 | 0.600 | 6.2 |" % state["best_mean_dice"])
    assert "| lowpower: error: no int8 here | — |" in lines[3]


def test_deployed_parameters_leave_out_the_auxiliary_modules():
    class Net(torch.nn.Module):
        aux_modules = ("aux",)

        def __init__(self):
            super().__init__()
            self.body, self.aux, self.auxiliary = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3), torch.nn.Linear(1, 1)

    assert deployed_parameters(Net()) == 6 + 2  # body and `auxiliary` (a prefix match needs the dot)


def test_the_table_file_is_written_once_and_replaced_only_with_force(tmp_path, capsys):
    table = tmp_path / "table.md"
    assert main([str(tmp_path), "--md", str(table)]) == 0
    assert table.read_text() == capsys.readouterr().out
    try:
        main([str(tmp_path), "--md", str(table)])
    except Exception as error:  # the safe writer's refusal
        assert "--force" in str(error)
    else:
        raise AssertionError("an existing --md was replaced without --force")
    assert main([str(tmp_path), "--md", str(table), "--force"]) == 0
