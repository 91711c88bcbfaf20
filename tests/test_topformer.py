"""TopFormer-T (networks/topformer.py) against the paper and the authors' code (hustvl/TopFormer).

Reference figures. The paper (Zhang et al., arXiv:2204.05525, Table 1; also the authors' README) gives
TopFormer-T 1.4 M parameters and 0.6 GFLOPs at 512x512 on ADE20K (150 classes). Counting the authors'
modules by hand (``reference_parameters`` below: backbone/topformer.py ``Topformer`` with the
topformer_tiny.py settings, SimpleHead with is_dw=True, channels 128) gives 1,389,654 at 150 classes,
which rounds to the paper's 1.4 M; at 19 classes the classifier (1x1 conv 128 -> classes, with bias)
holds 131 x 129 = 16,899 fewer, 1,372,755.

GFLOPs: ``count_flops`` counts convolutions and matmuls, 2 FLOPs per multiply-add; halved, TopFormer-T
is 0.534 G multiply-adds at 512x512 and 150 classes, 11% under the paper's 0.6 because the paper's
figure is rounded to one decimal and its counter (mmcv/fvcore, as in the authors' code) also counts
BatchNorm (2 per element) and activation elements: with those (counted here by hooks) it is 0.577 G,
which rounds to 0.6.
"""
import pytest
import torch
import torch.nn as nn

import networks
from lowpower.measure.flops import count_flops
from lowpower.train.pretrained_file import load_authors_file
from networks.topformer import TINY_CFGS, TopFormer

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PAPER_PARAMS = 1.4e6        # 150 classes
PAPER_GFLOPS = 0.6          # multiply-adds at 512x512, 150 classes, one decimal
NUM_CLASSES = 19


def conv_bn(a, b, k=1, groups=1):
    return a * b * k * k // groups + 2 * b


def reference_parameters(num_classes):
    """The authors' TopFormer-T with SimpleHead, counted module by module from their code."""
    total = conv_bn(3, 16, 3)                                           # tpm.stem
    inp = 16
    for k, t, c, _ in TINY_CFGS:                                        # tpm.layer1..9
        hidden = inp * t
        total += (conv_bn(inp, hidden) if t != 1 else 0) + conv_bn(hidden, hidden, k, hidden) + conv_bn(hidden, c)
        inp = c
    dim, key_dim, heads, mlp = 208, 16, 4, 416                          # trans: 4 blocks
    attention = 2 * conv_bn(dim, key_dim * heads) + conv_bn(dim, 2 * key_dim * heads) + conv_bn(128, dim)
    mlp_params = conv_bn(dim, mlp) + (mlp * 9 + mlp) + conv_bn(mlp, dim)
    total += 4 * (attention + mlp_params)
    total += sum(3 * conv_bn(c, 128) for c in (32, 64, 96))              # SIM 1..3
    total += conv_bn(128, 128, 1, 128) + 128 * num_classes + num_classes  # decode_head
    return total


def deployed_parameters(model):
    aux = tuple(name + '.' for name in type(model).aux_modules)
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(aux))


def test_parameter_count_matches_the_reference_and_the_paper():
    assert reference_parameters(150) == 1389654
    assert abs(reference_parameters(150) - PAPER_PARAMS) < 0.05e6  # the paper's one decimal
    assert deployed_parameters(networks.create_model('topformer_t', num_classes=150)) == reference_parameters(150)
    count = deployed_parameters(networks.create_model('topformer_t', num_classes=NUM_CLASSES))
    assert abs(count - reference_parameters(NUM_CLASSES)) <= 0.01 * reference_parameters(NUM_CLASSES)
    assert count == 1372755


def test_gflops_at_512_round_to_the_papers_figure():
    with torch.device('meta'):
        model = networks.create_model('topformer_t', num_classes=150).eval()
        images = torch.empty(1, 3, 512, 512)
    gmacs = count_flops(model, images) / 2e9
    assert abs(gmacs - 0.534) < 0.005, gmacs
    # The paper's counter also counts BatchNorm (2 per element, affine) and activation elements.
    extra = [0]

    def hook(module, inputs, output):
        extra[0] += inputs[0].numel() * (2 if isinstance(module, nn.BatchNorm2d) else 1)

    model = networks.create_model('topformer_t', num_classes=150).eval()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.ReLU, nn.ReLU6)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 512, 512))
    assert round(gmacs + extra[0] / 1e9, 1) == PAPER_GFLOPS


@pytest.mark.parametrize('size', [(32, 32), (64, 64), (96, 160)])
def test_logits_at_the_input_size_even_when_the_token_map_is_1x1(size):
    model = networks.create_model('topformer_t').eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 14) + size


def test_the_authors_layout():
    model = networks.create_model('topformer_t', num_classes=NUM_CLASSES)
    assert [model.tpm.layers[i] for i in (2, 4, 6, 8)] == ['layer3', 'layer5', 'layer7', 'layer9']
    assert [type(m).__name__ for m in model.SIM] == ['Identity'] + ['InjectionMultiSum'] * 3
    block = model.trans.transformer_blocks[0]
    assert block.attn.to_q.c.out_channels == 64 and block.attn.to_v.c.out_channels == 128
    assert block.mlp.fc1.c.out_channels == 416 and block.mlp.dwconv.groups == 416
    assert isinstance(block.drop_path, nn.Identity)
    drops = [b.drop_path.drop_prob for b in model.trans.transformer_blocks[1:]]
    assert drops == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    assert model.decode_head.linear_fuse.conv.groups == 128
    # The token size is the authors' (H - 1) // 2 + 1 of the 1/32 map: 8x8 at 512, 3x3 at 160.
    with torch.no_grad():
        pyramid = model.eval().tpm(torch.zeros(1, 3, 160, 160))
        assert model.ppa(pyramid).shape == (1, 208, 3, 3)


def test_pooling_and_hard_sigmoid_equal_the_authors_ops():
    from networks.topformer import HSigmoid, pool_to
    x = torch.randn(2, 16, 40, 40)
    assert torch.allclose(pool_to(x, (5, 5)), nn.functional.adaptive_avg_pool2d(x, (5, 5)), atol=1e-6)
    assert torch.allclose(pool_to(x, (3, 3)), nn.functional.adaptive_avg_pool2d(x, (3, 3)), atol=1e-6)
    assert torch.allclose(HSigmoid()(x * 4), nn.functional.relu6(x * 4 + 3) / 6, atol=1e-6)


def test_drop_path_is_identity_in_eval_and_no_aux_outputs():
    torch.manual_seed(0)
    model = networks.create_model('topformer_t').eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images), model(images))
    assert TopFormer.aux_heads == () and TopFormer.aux_modules == () and model.aux_outputs == ()
    out = model.train()(images)
    assert torch.is_tensor(out) and out.shape == (2, 14, 64, 64)


def authors_imagenet_state(model):
    """A state dict laid out as topformer-T-224-66.2.pth: the backbone keys (tpm.*, trans.*, no SIM) and
    the classifier BN_Linear ``head.bn`` / ``head.l`` of their classification model."""
    state = {key: torch.randn(value.shape) if value.is_floating_point() else value.clone()
             for key, value in model.state_dict().items() if key.startswith(('tpm.', 'trans.'))}
    for key in ('tpm.stem.0.c.weight', 'tpm.layer1.conv.0.c.weight', 'tpm.layer2.conv.4.bn.running_var',
                'tpm.layer9.conv.2.bn.bias', 'trans.transformer_blocks.0.attn.to_q.c.weight',
                'trans.transformer_blocks.3.attn.proj.1.bn.weight', 'trans.transformer_blocks.2.mlp.dwconv.bias',
                'trans.transformer_blocks.1.mlp.fc2.bn.running_mean'):
        assert key in state, key
    state.update({'head.bn.weight': torch.randn(208), 'head.bn.bias': torch.randn(208),
                  'head.bn.running_mean': torch.randn(208), 'head.bn.running_var': torch.rand(208),
                  'head.l.weight': torch.randn(1000, 208), 'head.l.bias': torch.randn(1000)})
    return state


def test_the_authors_imagenet_file_fills_every_backbone_key(tmp_path):
    model = networks.create_model('topformer_t', num_classes=NUM_CLASSES)
    state = authors_imagenet_state(model)
    state['not_a_layer.weight'] = torch.zeros(3)
    path = tmp_path / 'topformer-T-224-66.2.pth'
    # Their classification trainer (timm-style) saves the EMA weights beside the plain ones.
    torch.save({'state_dict_ema': state, 'state_dict': state}, path)
    lines = []
    missing, unexpected = load_authors_file(model, path, log=lines.append)
    assert list(unexpected) == ['not_a_layer.weight']
    assert missing and all(key.startswith(('SIM.', 'decode_head.')) for key in missing)
    loaded = model.state_dict()
    for key in ('tpm.layer5.conv.2.c.weight', 'trans.transformer_blocks.3.attn.to_v.bn.running_var'):
        assert torch.equal(loaded[key], state[key])
    assert 'not_a_layer.weight' in lines[0] and 'head.l.weight' not in lines[0]
