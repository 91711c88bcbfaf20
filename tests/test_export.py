"""ONNX export (lowpower.ship.export): opset <= 13, onnx.checker, onnxruntime agreement, Resize modes, the CLI."""
import onnx
import pytest
import torch
import torch.nn.functional as F

import networks
from lowpower.checkpoint import save_checkpoint
from lowpower.ship.export import (
    MAX_OPSET,
    MIN_AGREEMENT,
    ExportError,
    check_opset,
    export_and_verify,
    export_onnx,
    main,
)
from lowpower.ship.export_check import compare_with_onnxruntime, probe_images, resize_modes, resize_problems
from tests.conftest import zoo_params

ARCH_KWARGS = {"num_classes": 14, "base_width": 4, "depth": 2}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make_checkpoint(path, input_size=32):
    torch.manual_seed(0)
    model = networks.create_model("unet", **ARCH_KWARGS)
    save_checkpoint({"arch": "unet", "arch_kwargs": dict(ARCH_KWARGS), "model": model.state_dict(),
                     "config": {"data": {"input_size": input_size}}, "input_size": input_size}, path)
    return path


class Resizer(torch.nn.Module):
    """A conv, then bilinear resizes down and up to odd sizes (where coordinate modes differ most)."""

    def __init__(self, align_corners=False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.align_corners = align_corners

    def forward(self, x):
        y = F.interpolate(self.conv(x), size=(13, 7), mode="bilinear", align_corners=self.align_corners)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)


@pytest.mark.parametrize("name", zoo_params(networks.list_models()))
def test_every_zoo_network_exports_and_agrees_or_gives_a_reason(name, tmp_path):
    torch.manual_seed(0)
    model = networks.create_model(name).eval()
    try:
        row = export_and_verify(model, tmp_path / "m.onnx", 64, threads=1)
    except ExportError as error:
        reason = str(error)
        assert reason and "\n" not in reason
        return
    if row["problem"] is not None:
        assert "\n" not in row["problem"]
        return
    assert row["agreement"] >= MIN_AGREEMENT
    exported = onnx.load(str(tmp_path / "m.onnx"))
    assert row["opset"] == 13 and [o.version for o in exported.opset_import] == [13]
    assert resize_problems(resize_modes(exported)) == []


@pytest.mark.parametrize("align_corners, coords", [(False, {"half_pixel", "pytorch_half_pixel"}),
                                                   (True, {"align_corners"})])
def test_bilinear_resize_exports_with_pytorchs_coordinate_mode(tmp_path, align_corners, coords):
    torch.manual_seed(0)
    model = Resizer(align_corners).eval()
    row = export_and_verify(model, tmp_path / "r.onnx", 32, threads=1)
    modes = resize_modes(onnx.load(str(tmp_path / "r.onnx")))
    assert len(modes) == 2 and {m.split("/")[1] for m in modes} <= coords
    assert {m.split("/")[0] for m in modes} == {"linear"}
    assert row["problem"] is None and row["agreement"] == 1.0 and row["max_diff"] < 1e-4


def test_resize_problems_flags_the_upsample_semantics():
    assert resize_problems(["linear/half_pixel", "linear/asymmetric", "nearest/asymmetric"]) == ["linear/asymmetric"]


def test_comparison_detects_a_file_of_another_network(tmp_path):
    torch.manual_seed(0)
    export_onnx(Resizer().eval(), tmp_path / "a.onnx", 32)
    torch.manual_seed(1)
    result = compare_with_onnxruntime(Resizer().eval(), tmp_path / "a.onnx", 32, threads=1)
    assert result["agreement"] < MIN_AGREEMENT and result["max_diff"] > 1e-2


def test_probe_images_are_seeded():
    first, second = probe_images(16, seed=3), probe_images(16, seed=3)
    assert len(first) == 4 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], probe_images(16, seed=4)[0])


def test_cli_exports_a_checkpoint_at_its_input_size(tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "best.pt")
    assert main([str(checkpoint), "--onnx", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "| 13 |" in out and "100.0000%" in out and "| ok |" in out and "max abs diff" in out
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "image" and dims == [1, 3, 32, 32]


def test_cli_input_size_overrides_the_checkpoint(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "best.pt")
    assert main([str(checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--input-size", "48", "--opset", "12"]) == 0
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 14, 48, 48]
    assert [o.version for o in model.opset_import] == [12]


@pytest.mark.parametrize("opset, words", [(MAX_OPSET + 1, "TensorRT 8.2 reads ONNX opsets up to 13"),
                                          (9, "Upsample")])
def test_cli_refuses_an_opset_the_device_cannot_use(tmp_path, capsys, opset, words):
    checkpoint = make_checkpoint(tmp_path / "best.pt")
    with pytest.raises(SystemExit) as exit_:  # --opset is bounded: argparse refuses it, saying why
        main([str(checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--opset", str(opset)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert words in err.splitlines()[-1] and "argument --opset" in err
    assert not (tmp_path / "m.onnx").exists()


def test_check_opset_refuses_what_the_device_cannot_read():
    with pytest.raises(ExportError, match="TensorRT 8.2 reads ONNX opsets up to 13"):
        check_opset(MAX_OPSET + 1)
    with pytest.raises(ExportError, match="Upsample"):
        check_opset(9)


@pytest.mark.parametrize("content", [None, b"not a checkpoint", "dict", "weights"])
def test_cli_bad_checkpoint_is_one_line_naming_the_file(tmp_path, capsys, content):
    path = tmp_path / "broken.pt"
    if content == "dict":
        torch.save({"model": {}}, path)
    elif content == "weights":  # readable, but the weights are not the network's
        torch.save({"arch": "unet", "arch_kwargs": dict(ARCH_KWARGS), "model": {"x": torch.zeros(1)}}, path)
    elif content is not None:
        path.write_bytes(content)
    assert main([str(path), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(path) in err and len(err.splitlines()) == 1


def test_cli_zoo_prints_a_row_per_network(monkeypatch, capsys):
    monkeypatch.setattr(networks, "list_models", lambda: ["cunet", "lraspp_mbv3_small"])
    assert main(["--zoo", "--input-size", "32"]) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("| cunet") or line.startswith("| lraspp")]
    assert len(rows) == 2 and all("| ok |" in row for row in rows)
    assert "export" in captured.err  # the tqdm bar


def test_cli_help_and_argument_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "TensorRT 8.2" in capsys.readouterr().out
    for argv in ([], ["x.pt"], ["x.pt", "--zoo", "--onnx", "m.onnx"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2


def test_cli_exports_a_checkpoint_that_train_py_wrote(float_checkpoint, tmp_path, capsys):
    assert main([str(float_checkpoint), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert "| ok |" in capsys.readouterr().out
    dims = [d.dim_value for d in onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]  # TINY_TRAINING's data.input_size
