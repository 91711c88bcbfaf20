"""PIDNet-S (networks/pidnet.py) against the paper and the authors' code (github.com/XuJiacong/PIDNet).

Reference figures:
- parameters: 7.6 M (paper, arXiv:2206.02066, Table of Cityscapes results). Counting the reference
  code's modules (models/pidnet.py and models/model_utils.py, PIDNet(m=2, n=3, planes=32, ppm_planes=96,
  head_planes=128, num_classes=19)) gives 7,720,935 with its two training heads and 7,625,715 without
  them (seghead_p: 76,563, seghead_d: 18,657 parameters); our deployed count must equal the latter.
- 47.6 GFLOPs at 1024x2048 (paper, same table), which are multiply-adds: torch's counter gives
  94.39 G FLOPs (convs only, 2 per multiply-add), i.e. 47.19 G multiply-adds, 0.9% under the paper,
  whose count also includes the element-wise ops torch's counter leaves out.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import networks
from lowpower.measure.flops import count_flops
from lowpower.train.pretrained_file import load_authors_file, map_authors_state

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REFERENCE_DEPLOYED_PARAMS = 7625715  # the reference code's modules, counted (see above)
PAPER_PARAMS = 7.6e6
PAPER_GMACS = 47.6  # the paper's "GFLOPs" at 1024x2048, 19 classes
AUX = ('aux', 'boundary')


def build(num_classes=19, seed=0):
    torch.manual_seed(seed)
    return networks.create_model('pidnet_s', num_classes=num_classes)


def deployed_params(model):
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(tuple(prefix + '.' for prefix in model.aux_modules)))


def test_parameter_count_matches_the_reference_code_and_the_paper():
    model = build()
    assert deployed_params(model) == REFERENCE_DEPLOYED_PARAMS
    assert abs(deployed_params(model) - PAPER_PARAMS) / PAPER_PARAMS < 0.01
    heads = {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in model.aux_modules}
    assert heads == {'seghead_p': 76563, 'seghead_d': 18657}


def test_multiply_adds_at_the_papers_input_size_are_within_3_percent():
    with torch.device('meta'):
        model = networks.create_model('pidnet_s', num_classes=19).eval()
        images = torch.empty(1, 3, 1024, 2048)
    gmacs = count_flops(model, images) / 2 / 1e9
    assert abs(gmacs - PAPER_GMACS) / PAPER_GMACS < 0.03


@pytest.mark.parametrize('size', [32, 64, (64, 96)])
def test_eval_returns_logits_at_the_input_size(size):
    height, width = (size, size) if isinstance(size, int) else size
    model = build(14).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, height, width))
    assert logits.shape == (1, 14, height, width)


def test_aux_outputs_have_their_channels_and_train_their_heads():
    model = build(14).train()
    assert [name for name, _ in model.aux_heads] == list(AUX)
    assert dict(model.aux_heads) == {'aux': 'segmentation', 'boundary': 'boundary'}
    model.aux_outputs = AUX
    outputs = model(torch.randn(2, 3, 64, 64))
    assert sorted(outputs) == ['aux', 'boundary', 'out']
    assert outputs['out'].shape == (2, 14, 64, 64)
    assert outputs['aux'].shape == (2, 14, 8, 8)  # P branch, 1/8
    assert outputs['boundary'].shape == (2, 1, 8, 8)  # D branch, 1/8
    for name, head in (('aux', model.seghead_p), ('boundary', model.seghead_d)):
        model.zero_grad()
        outputs = model(torch.randn(2, 3, 64, 64))
        if name == 'aux':
            loss = F.cross_entropy(outputs[name], torch.randint(0, 14, (2, 8, 8)))
        else:
            loss = F.binary_cross_entropy_with_logits(outputs[name], torch.rand(2, 1, 8, 8).round())
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters()), name
        other = model.seghead_d if name == 'aux' else model.seghead_p
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in other.parameters()), name


def test_only_the_asked_aux_output_is_made_and_none_in_eval():
    model = build(14).train()
    model.aux_outputs = ('boundary',)
    assert sorted(model(torch.randn(2, 3, 64, 64))) == ['boundary', 'out']
    model.aux_outputs = ()
    assert isinstance(model(torch.randn(2, 3, 64, 64)), torch.Tensor)
    model.aux_outputs = AUX
    with torch.no_grad():
        assert isinstance(model.eval()(torch.randn(1, 3, 64, 64)), torch.Tensor)


def authors_imagenet_state(model):
    """A state dict laid out as PIDNet_S_ImageNet.pth.tar is: the authors' layer names (the backbone
    of all three branches, no segmentation heads) plus their DDRNet-style ImageNet classifier."""
    own = model.state_dict()
    state = {key: torch.randn(value.shape) if value.is_floating_point() else value.clone()
             for key, value in own.items() if not key.startswith(('seghead_p.', 'seghead_d.', 'final_layer.'))}
    # Literal names of the reference code (their conv1 convs have a bias; their blocks name conv1/bn1/...).
    for key in ('conv1.0.weight', 'conv1.0.bias', 'conv1.1.running_var', 'conv1.3.weight',
                'layer1.0.conv1.weight', 'layer2.0.downsample.0.weight', 'layer3.2.bn2.running_mean',
                'layer5.0.conv3.weight', 'layer5.1.bn3.weight', 'compression3.0.weight', 'compression4.1.bias',
                'pag3.f_x.0.weight', 'pag4.f_y.1.running_var', 'layer3_.1.conv2.weight',
                'layer5_.0.downsample.0.weight',
                'layer3_d.conv1.weight', 'layer3_d.downsample.1.weight', 'layer4_d.0.conv3.weight',
                'diff3.0.weight', 'diff4.1.weight', 'spp.scale1.1.weight', 'spp.scale4.3.weight',
                'spp.scale_process.2.weight', 'spp.compression.2.weight', 'spp.shortcut.2.weight',
                'dfm.conv_p.0.weight', 'dfm.conv_i.1.bias', 'layer5_d.0.bn3.running_mean'):
        assert key in state, key
    assert state['conv1.0.bias'].shape == (32,) and state['spp.scale_process.2.weight'].shape == (384, 96, 3, 3)
    state.update({'down5.0.weight': torch.randn(256, 128, 3, 3), 'last_layer.0.weight': torch.randn(1024, 256, 1, 1),
                  'linear.weight': torch.randn(1000, 1024), 'linear.bias': torch.randn(1000)})
    return state


def test_the_authors_imagenet_file_loads_by_name(tmp_path):
    model = build(14)
    state = authors_imagenet_state(model)
    mapped, ignored = map_authors_state(model, state)
    assert ignored == ['down5.0.weight', 'last_layer.0.weight', 'linear.bias', 'linear.weight']
    state['unknown_layer.weight'] = torch.randn(3)
    path = tmp_path / 'PIDNet_S_ImageNet.pth.tar'
    torch.save({'state_dict': state}, path)  # their trainer reads the file's 'state_dict'
    lines = []
    missing, unexpected = load_authors_file(model, path, log=lines.append)
    assert list(unexpected) == ['unknown_layer.weight']
    assert missing and all(key.startswith(('seghead_p.', 'seghead_d.', 'final_layer.')) for key in missing)
    own = model.state_dict()
    assert all(torch.equal(own[key], value) for key, value in mapped.items())
    assert 'unknown_layer.weight' in lines[0]


def test_int8_keeps_only_the_gates_in_float():
    from networks import quant
    engine, _ = quant.select_engine('x86' if 'x86' in quant.supported_engines() else 'fbgemm')
    torch.manual_seed(0)
    float_model = networks.create_model('pidnet_s', num_classes=14, planes=16, head_planes=32).eval()
    model = quant.prepare_ptq(copy.deepcopy(float_model), engine)
    images = torch.rand(1, 3, 32, 32)  # small: histogram calibration is the slow part
    with torch.no_grad():
        model(images)
        int8 = quant.convert_int8(model)
        got, expected = int8(images), float_model(images)
    assert not any(type(module) is torch.nn.Conv2d for module in int8.modules())
    quantize = type(int8.dfm.gate.quant_gate)
    assert 'Quantize' in quantize.__name__ and type(int8.pag3.gate.quant_keep) is quantize
    assert ((got - expected).abs().mean() / expected.abs().mean()) < 0.25
