"""The table of checkpoint kinds (``lowpower.checkpoint.TABLE``): every kind is in it, recognised by
``kind_of`` from a checkpoint made here and saved through the safe loader, rebuilds a model that
computes what the saved one did, describes itself in one line and says what it packages as; a float
checkpoint is never taken for another kind."""
import pytest
import torch

import networks
from lowpower import checkpoint as ckpt
from lowpower.compress import kinds as base_kinds
from lowpower.compress.quantize import fixed_point_train, kinds
from networks import quant
from tests.conftest import randomize_batchnorm

pytestmark = pytest.mark.usefixtures("single_torch_thread")

NAMES = [kind.name for kind in ckpt.TABLE]
KWARGS = {"num_classes": 3, "base_width": 4, "depth": 2}
# Narrows the stem's first conv from 4 to 2 output channels (and what reads them): 3 layers.
PLAN = {"stem.0.0": {"in_channels": 3, "out_channels": 2, "groups": 1}, "stem.0.1": {"num_features": 2},
        "stem.1.0": {"in_channels": 2, "out_channels": 4, "groups": 1}}
FIXED_POINT = {"fixed_point": "lsq", "weight_bits": 4, "act_bits": 6, "edge_bits": 8}
IMAGES = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def float_model(plan=None):
    torch.manual_seed(0)
    model = networks.create_model("unet", **KWARGS, **({"width_plan": plan} if plan else {}))
    return randomize_batchnorm(model, 1).eval()


def state_of(model, arch_kwargs, **extra):
    return dict({"arch": "unet", "arch_kwargs": arch_kwargs, "model": model.state_dict(),
                 "config": {"quant": {"qat": False, "engine": "x86"}}, "input_size": 32}, **extra)


def int8_model(model, engine):
    prepared = quant.prepare_ptq(model, engine)
    with torch.no_grad():
        prepared(IMAGES)
    return quant.convert_int8(prepared)


def make(name, engine):
    """``(checkpoint dict, the model it was saved from in eval mode)`` of kind ``name``."""
    if name == "float":
        model = float_model()
        return state_of(model, dict(KWARGS)), model
    if name == "pruned":
        model = float_model(PLAN)
        return state_of(model, dict(KWARGS, width_plan=PLAN)), model
    if name == "qat":
        model = quant.prepare_qat(float_model(), engine)
        with torch.no_grad():
            model(IMAGES)  # observers see data: the ranges the rebuilt model must load
        model.eval().apply(quant.api().disable_observer)
        return state_of(model, dict(KWARGS), config={"quant": {"qat": True, "engine": engine}}), model
    if name == "fixed_point":
        quant_cfg = {"qat": False, "engine": engine, **FIXED_POINT}
        model = fixed_point_train.quantize(float_model(), fixed_point_train.settings_of({"quant": quant_cfg})).model
        with torch.no_grad():
            model.train()(IMAGES)  # LSQ's steps start from the data, the range scheme's maxima would too
        return state_of(model.eval(), dict(KWARGS), config={"quant": quant_cfg}), model
    if name == "int8":
        model = int8_model(float_model(), engine)
        record = {"engine": engine, "mode": "ptq", "per_channel": quant.per_channel(engine), "calib_images": 2}
        return state_of(model, dict(KWARGS), quant=record), model
    raise AssertionError("no test checkpoint for the kind %r: add one to make()" % name)


@pytest.fixture(scope="module")
def engine():
    return quant.select_engine("x86")[0]


@pytest.fixture(scope="module")
def saved(engine, tmp_path_factory):
    """Per kind, the checkpoint as load_checkpoint reads it back, and its source model."""
    folder = tmp_path_factory.mktemp("kinds")
    made = {}
    for name in NAMES:
        state, model = make(name, engine)
        ckpt.save_checkpoint(state, folder / (name + ".pt"))
        made[name] = ckpt.load_checkpoint(folder / (name + ".pt")), model
    return made


def test_every_kind_is_a_row_of_the_table_once():
    assert len(NAMES) == len(set(NAMES)) == 5 and set(ckpt.KINDS) == set(NAMES)
    assert NAMES[-1] == "float", "float takes whatever no other kind recognises: it must be tried last"
    for name in NAMES:
        assert ckpt.KINDS[name].name == name and ckpt.KINDS[name].title
    assert (kinds.INT8, kinds.QAT, kinds.FIXED_POINT) == (ckpt.KINDS["int8"], ckpt.KINDS["qat"],
                                                          ckpt.KINDS["fixed_point"])


@pytest.mark.parametrize("name", NAMES)
def test_kind_of_recognises_it(name, saved):
    state, _ = saved[name]
    assert ckpt.kind_of(state) is ckpt.KINDS[name]
    others = [other for other in NAMES[:NAMES.index(name)] if ckpt.KINDS[other].recognise(state)]
    assert not others, "kinds tried before %s claim it: %s" % (name, others)


@pytest.mark.parametrize("name", NAMES)
def test_rebuilt_model_computes_what_was_saved(name, saved):
    state, source = saved[name]
    model = ckpt.build_model(state).eval()
    with torch.no_grad():
        out, expected = model(IMAGES), source(IMAGES)
    assert out.shape == (2, KWARGS["num_classes"], 32, 32) and not out.is_quantized
    assert torch.allclose(out, expected, atol=1e-5), "max difference %g" % (out - expected).abs().max()


@pytest.mark.parametrize("name", NAMES)
def test_describes_itself_in_one_line(name, saved, engine):
    state, _ = saved[name]
    line = ckpt.kind_of(state).describe(state)
    assert isinstance(line, str) and line.strip() == line and "\n" not in line and "unet" in line
    expected = {"float": "float unet", "pruned": "pruned unet (width plan of 3 layers)",
                "qat": "QAT training state (fake-quant, engine %s) of float unet" % engine,
                "fixed_point": "fixed-point training state (lsq w4/a6, first and last layers 8 bits) of float unet",
                "int8": "int8 (%s, %s, ptq) of float unet" % (
                    engine, "per-channel" if quant.per_channel(engine) else "per-tensor")}
    assert line == expected[name]


@pytest.mark.parametrize("name", NAMES)
def test_what_it_packages_as(name, saved):
    state, _ = saved[name]
    kind = ckpt.kind_of(state)
    exports = {  # name: (precisions, extra modules shipped, manifest fields)
        "float": (("fp32", "fp16"), (), set()),
        "pruned": (("fp32", "fp16"), ("networks.widths",), set()),
        "qat": ((), None, None),
        "fixed_point": ((), None, None),
        "int8": (("int8",), ("networks.quant",), {"quant"}),
    }
    precisions, modules, fields = exports[name]
    assert kind.precisions == precisions
    if not precisions:  # training states: QAT's int8 form is what ships; fixed point has no runtime
        refusal = {"qat": "best_int8.pt --precision int8", "fixed_point": "no fixed-point runtime"}[name]
        with pytest.raises(base_kinds.KindError, match=refusal):
            kind.package_precision(state, None, "runs/x/best.pt")
        return
    assert kind.package_precision(state, None, "c.pt") == precisions[0] == kind.default_precision
    for precision in ("fp32", "fp16", "int8"):
        if precision in precisions:
            assert kind.package_precision(state, precision, "c.pt") == precision
        else:
            with pytest.raises(base_kinds.KindError, match="c.pt is "):
                kind.package_precision(state, precision, "c.pt")
    assert tuple(kind.ship_modules(state)) == modules and set(kind.manifest_fields(state)) == fields
    model = kind.build_model(state)
    assert kind.parameters(state, model) == sum(p.numel() for p in float_model(
        ckpt.PRUNED.plan(state)).parameters())


def test_an_int8_checkpoint_of_a_pruned_network_is_int8_and_ships_the_widths(engine):
    model = int8_model(float_model(PLAN), engine)
    state = state_of(model, dict(KWARGS, width_plan=PLAN), quant={"engine": engine, "mode": "ptq"})
    kind = ckpt.kind_of(state)
    assert kind is kinds.INT8 and kind.cpu_only and not kind.float_weights
    assert set(kind.ship_modules(state)) == {"networks.quant", "networks.widths"}
    assert kind.describe(state).endswith("of pruned unet (width plan of 3 layers)")
    with torch.no_grad():
        assert torch.equal(kind.build_model(state)(IMAGES), model(IMAGES))


@pytest.mark.parametrize("variant", ["as saved", "qat off", "no config", "empty quant record", "no extras"])
def test_a_float_checkpoint_is_never_taken_for_another_kind(variant, saved):
    state = dict(saved["float"][0])
    if variant == "qat off":
        state["config"] = {"quant": {"qat": False, "engine": "x86"}, "train": {}}
    elif variant == "no config":
        state.pop("config")
    elif variant == "empty quant record":
        state.update(quant=None, config={"quant": None})
    elif variant == "no extras":
        state = {key: state[key] for key in ckpt.REQUIRED_KEYS}
    kind = ckpt.kind_of(state)
    assert kind is ckpt.FLOAT and kind.float_weights and kind.trainable and not kind.cpu_only
    assert base_kinds.layout_of(state) is ckpt.FLOAT and kind.engine(state) is None
