"""PP-LiteSeg-T (networks/ppliteseg.py) against the paper and the authors' code (PaddlePaddle/PaddleSeg).

Reference figures:

- Parameters: the paper (Peng et al., arXiv:2204.02681) gives no parameter count or FLOPs for
  PP-LiteSeg-T (its tables report mIoU and FPS only), so the reference is a hand count of PaddleSeg's
  ``PPLiteSeg`` built as its T config does (``configs/pp_liteseg/pp_liteseg_stdc1_cityscapes_1024x512_
  scale0.5_160k.yml``: STDC1, ``arm_out_chs [32, 64, 128]``, ``seg_head_inter_chs [32, 64, 64]``,
  UAFM_SpAtten, SPPM bins 1, 2, 4 at 128), 19 classes, without the two training-only seg heads and
  without STDCNet's ``conv_last`` (built by PaddleSeg, never called): 8,028,320 (``hand_count``).
- FLOPs: with no paper figure to meet, the test states ours at 1x3x1024x2048, 45.68 G multiply-adds
  (``count_flops`` counts 2 FLOPs per multiply-add), and checks the encoder against the one figure the
  authors do publish: STDC1 is "STDCNet813M", 813 M multiply-adds at 224x224 for the ImageNet network
  (Fan et al., CVPR 2021, their ImageNet comparison; the file name STDCNet813M_73.91 says it too); our
  encoder plus their classifier (conv_last 1x1 1024->1024 at 7x7, fc and linear 1024x1024 and
  1024x1000) counts 806 M, 0.8 % below (BN and pooling are not counted).
"""
import pytest
import torch
import torch.nn.functional as F

import networks
from lowpower.measure.flops import count_flops
from lowpower.train.pretrained_file import load_authors_file
from networks.ppliteseg import PPLiteSeg, PyramidPool, STDCNet

pytestmark = pytest.mark.usefixtures("single_torch_thread")

NUM_CLASSES = 19
REFERENCE_PARAMS = 8028320   # hand_count() below
OUR_GMACS = 45.68            # at 1x3x1024x2048; the paper gives none
STDC1_PAPER_MMACS = 813      # STDCNet813 at 224x224, with its ImageNet classifier


def conv(k, cin, cout, groups=1, bias=False):
    return k * k * cin // groups * cout + (cout if bias else 0)


def bn(channels):
    return 2 * channels


def hand_count(num_classes=NUM_CLASSES):
    """PaddleSeg's PP-LiteSeg-T layer by layer (stdcnet.py, pp_liteseg.py, tensor_fusion.py)."""
    total = conv(3, 3, 32) + bn(32) + conv(3, 32, 64) + bn(64)
    for cin, cout, stride in ((64, 256, 2), (256, 256, 1), (256, 512, 2), (512, 512, 1),
                              (512, 1024, 2), (1024, 1024, 1)):  # CatBottleneck, block_num 4
        total += conv(1, cin, cout // 2) + bn(cout // 2) + conv(3, cout // 2, cout // 4) + bn(cout // 4)
        total += conv(3, cout // 4, cout // 8) + bn(cout // 8) + conv(3, cout // 8, cout // 8) + bn(cout // 8)
        if stride == 2:  # avd_layer: depthwise 3x3 + BN
            total += conv(3, cout // 2, cout // 2, groups=cout // 2) + bn(cout // 2)
    total += 3 * (conv(1, 1024, 128, bias=True) + bn(128)) + conv(3, 128, 128, bias=True) + bn(128)  # SPPM
    for low, high, out in ((256, 64, 32), (512, 128, 64), (1024, 128, 128)):  # UAFM_SpAtten
        total += conv(3, low, high) + bn(high) + conv(3, high, out) + bn(out)
        total += conv(3, 4, 2) + bn(2) + conv(3, 2, 1) + bn(1)
    return total + conv(3, 32, 32) + bn(32) + conv(1, 32, num_classes)  # the 1/8 seg head


def deployed_parameters(model):
    aux = tuple(name + '.' for name in type(model).aux_modules)
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(aux))


def test_parameter_count_matches_the_reference_code():
    assert hand_count() == REFERENCE_PARAMS
    count = deployed_parameters(networks.create_model('ppliteseg_t', num_classes=NUM_CLASSES))
    assert abs(count - REFERENCE_PARAMS) <= 0.01 * REFERENCE_PARAMS
    assert count == REFERENCE_PARAMS


def test_gflops_at_1024x2048_and_the_encoder_against_stdc1s_published_figure():
    with torch.device('meta'):
        model = networks.create_model('ppliteseg_t', num_classes=NUM_CLASSES).eval()
        images = torch.empty(1, 3, 1024, 2048)
    gmacs = count_flops(model, images) / 2e9
    assert abs(gmacs - OUR_GMACS) <= 0.01 * OUR_GMACS, gmacs
    encoder = count_flops(STDCNet().eval(), torch.zeros(1, 3, 224, 224)) / 2e6
    classifier = (1024 * 1024 * 49 + 1024 * 1024 + 1024 * 1000) / 1e6
    assert abs(encoder + classifier - STDC1_PAPER_MMACS) <= 0.03 * STDC1_PAPER_MMACS


@pytest.mark.parametrize('size', [(32, 32), (64, 64), (96, 160)])
def test_logits_at_the_input_size_even_when_the_1_32_map_is_1x1(size):
    model = networks.create_model('ppliteseg_t').eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 14) + size


def test_the_t_config_widths_and_the_stdc1_layout():
    model = networks.create_model('ppliteseg_t')
    arms = model.ppseg_head.arm_list
    assert [arm.conv_out[0].out_channels for arm in arms] == [32, 64, 128]
    assert [arm.conv_x[0].out_channels for arm in arms] == [64, 128, 128]
    assert [head[0][0].out_channels for head in (model.seg_head, model.seg_head16, model.seg_head32)] == [32, 64, 64]
    assert model.backbone.stage_ends == [4, 6, 8] and len(model.backbone.features) == 8
    assert model.seg_head[1].bias is None and model.ppseg_head.cm.stages[0][1][0].bias is not None


@pytest.mark.parametrize('side, bins', [(1, 2), (1, 4), (2, 4), (4, 4), (8, 2)])
def test_small_maps_pool_to_their_own_size_with_the_same_stage_output(side, bins):
    torch.manual_seed(0)
    x = torch.randn(1, 3, side, side)
    conv = torch.nn.Conv2d(3, 4, 1)
    expected = F.interpolate(conv(F.adaptive_avg_pool2d(x, bins)), (side, side), mode='bilinear', align_corners=False)
    got = F.interpolate(conv(PyramidPool(bins)(x)), (side, side), mode='bilinear', align_corners=False)
    assert torch.allclose(got, expected, atol=1e-6)


def test_aux_heads_only_when_asked_and_their_loss_reaches_their_weights():
    torch.manual_seed(0)
    model = networks.create_model('ppliteseg_t').train()
    assert PPLiteSeg.aux_heads == (('aux16', 'segmentation'), ('aux32', 'segmentation'))
    assert model.aux_outputs == ()
    images = torch.randn(2, 3, 64, 64)
    assert torch.is_tensor(model(images))
    model.aux_outputs = tuple(name for name, _ in model.aux_heads)
    out = model(images)
    assert sorted(out) == ['aux16', 'aux32', 'out']
    assert out['out'].shape == (2, 14, 64, 64)
    assert out['aux16'].shape == (2, 14, 4, 4) and out['aux32'].shape == (2, 14, 2, 2)
    (out['aux16'].logsumexp(dim=1).mean() + out['aux32'].logsumexp(dim=1).mean()).backward()
    for head in (model.seg_head16, model.seg_head32):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert all(p.grad is None for p in model.seg_head.parameters())
    model.aux_outputs = ('aux32',)
    assert sorted(model(images)) == ['aux32', 'out']
    assert torch.is_tensor(model.eval()(images))


def authors_imagenet_state(model):
    """A state dict laid out as STDC-Seg's STDCNet813M_73.91.tar (nets/stdcnet.py, STDCNet813)."""
    state = {key[len('backbone.'):]: torch.randn(value.shape) if value.is_floating_point() else value.clone()
             for key, value in model.state_dict().items() if key.startswith('backbone.')}
    for key in ('features.0.conv.weight', 'features.1.bn.running_var', 'features.2.conv_list.0.conv.weight',
                'features.2.avd_layer.0.weight', 'features.2.avd_layer.1.running_mean',
                'features.3.conv_list.3.bn.bias', 'features.6.conv_list.1.conv.weight',
                'features.7.conv_list.2.bn.num_batches_tracked'):
        assert key in state, key
    # Their x2..x32 are nn.Sequential views of features (same tensors, original indices), then the classifier.
    state.update({
        'x2.0.0.conv.weight': state['features.0.conv.weight'],
        'x8.0.2.conv_list.0.conv.weight': state['features.2.conv_list.0.conv.weight'],
        'x32.0.7.conv_list.3.bn.weight': state['features.7.conv_list.3.bn.weight'],
        'conv_last.conv.weight': torch.randn(1024, 1024, 1, 1), 'conv_last.bn.running_var': torch.rand(1024),
        'fc.weight': torch.randn(1024, 1024), 'bn.weight': torch.randn(1024), 'bn.running_mean': torch.randn(1024),
        'linear.weight': torch.randn(1000, 1024),
    })
    return state


def test_the_authors_imagenet_file_fills_every_backbone_key(tmp_path):
    model = networks.create_model('ppliteseg_t', num_classes=NUM_CLASSES)
    state = authors_imagenet_state(model)
    state['not_a_layer.weight'] = torch.zeros(3)
    path = tmp_path / 'STDCNet813M_73.91.tar'
    torch.save({'epoch': 300, 'state_dict': {'module.' + key: value for key, value in state.items()}}, path)
    lines = []
    missing, unexpected = load_authors_file(model, path, log=lines.append)
    assert list(unexpected) == ['not_a_layer.weight']
    assert missing and not [key for key in missing if key.startswith('backbone.')]
    loaded = model.state_dict()
    for key in ('features.0.conv.weight', 'features.2.avd_layer.0.weight', 'features.7.conv_list.3.bn.weight'):
        assert torch.equal(loaded['backbone.' + key], state[key])
    assert 'not_a_layer.weight' in lines[0]
