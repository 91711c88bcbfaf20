"""DDRNet-23-slim (networks/ddrnet.py) against the paper and the authors' code (ydhongHIT/DDRNet).

Reference figures: the paper's Cityscapes comparison table (Hong et al., arXiv:2101.06085) gives
DDRNet-23-slim 5.7 M parameters and 36.3 GFLOPs at 1024x2048. The authors' ``DualResNet`` with
``augment=False`` (segmentation/DDRNet_23_slim.py: planes 32, spp_planes 128, head_planes 64, 19 classes)
holds exactly the modules we deploy, counted by hand: 5,695,987 parameters, which rounds to the paper's
5.7 M. The paper's GFLOPs are multiply-adds; ``count_flops`` counts 2 FLOPs per multiply-add.
"""
import pytest
import torch

import networks
from lowpower.measure.flops import count_flops
from lowpower.train.pretrained_file import load_authors_file
from networks.ddrnet import DDRNet

pytestmark = pytest.mark.usefixtures("single_torch_thread")

PAPER_PARAMS = 5.7e6
REFERENCE_PARAMS = 5695987  # the authors' DualResNet(augment=False), 19 classes
PAPER_GMACS = 36.3          # at 1024x2048
NUM_CLASSES = 19


def deployed_parameters(model):
    aux = tuple(name + '.' for name in type(model).aux_modules)
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(aux))


def test_parameter_count_matches_the_reference_and_the_paper():
    model = networks.create_model('ddrnet23_slim', num_classes=NUM_CLASSES)
    count = deployed_parameters(model)
    assert count == REFERENCE_PARAMS
    assert abs(count - PAPER_PARAMS) <= 0.01 * PAPER_PARAMS


def test_gflops_at_the_paper_size_match_the_paper():
    with torch.device('meta'):
        model = networks.create_model('ddrnet23_slim', num_classes=NUM_CLASSES).eval()
        images = torch.empty(1, 3, 1024, 2048)
    gmacs = count_flops(model, images) / 2e9
    assert abs(gmacs - PAPER_GMACS) <= 0.03 * PAPER_GMACS, gmacs


@pytest.mark.parametrize('size', [(32, 32), (64, 64), (96, 160)])
def test_logits_at_the_input_size_even_when_the_1_64_map_is_1x1(size):
    model = networks.create_model('ddrnet23_slim').eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 14) + size


def test_the_authors_layout_no_relu_and_dappm_pools():
    model = networks.create_model('ddrnet23_slim')
    for name in ('layer1', 'layer2', 'layer3', 'layer4', 'layer3_', 'layer4_'):
        assert [block.no_relu for block in getattr(model, name)] == [False, True], name
    assert model.layer5[0].no_relu and model.layer5_[0].no_relu  # the segmentation Bottleneck's default
    pools = [getattr(model.spp, 'scale%d' % index)[0] for index in (1, 2, 3)]
    assert [(p.kernel_size, p.stride, p.padding, p.count_include_pad) for p in pools] == [
        (5, 2, 2, True), (9, 4, 4, True), (17, 8, 8, True)]
    assert model.layer5[0].conv2.stride == (2, 2) and model.conv1[0].bias is not None


def test_aux_head_only_when_asked_and_its_loss_reaches_its_weights():
    torch.manual_seed(0)
    model = networks.create_model('ddrnet23_slim').train()
    assert DDRNet.aux_heads == (('aux', 'segmentation'),) and model.aux_outputs == ()
    images = torch.randn(2, 3, 64, 64)
    assert torch.is_tensor(model(images))
    model.aux_outputs = tuple(name for name, _ in model.aux_heads)
    out = model(images)
    assert sorted(out) == ['aux', 'out']
    assert out['out'].shape == (2, 14, 64, 64) and out['aux'].shape == (2, 14, 8, 8)
    out['aux'].logsumexp(dim=1).mean().backward()
    head = list(model.seghead_extra.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    assert all(p.grad is None for p in model.final_layer.parameters())
    assert torch.is_tensor(model.eval()(images))


def authors_imagenet_state(model):
    """A state dict laid out as DDRNet23s_imagenet.pth: their backbone keys, and their classifier."""
    state = {key: torch.randn(value.shape) if value.is_floating_point() else value.clone()
             for key, value in model.state_dict().items()
             if not key.startswith(('spp.', 'final_layer.', 'seghead_extra.'))}
    for key in ('conv1.0.weight', 'conv1.0.bias', 'conv1.4.running_var', 'layer1.0.conv1.weight',
                'layer2.0.downsample.1.weight', 'layer3_.1.bn2.bias', 'layer4.1.conv2.weight',
                'layer5_.0.downsample.0.weight', 'layer5.0.conv3.weight', 'compression3.0.weight',
                'compression4.1.running_mean', 'down3.0.weight', 'down4.3.weight', 'down4.4.weight'):
        assert key in state, key
    # Their classifier (classification/DDRNet_23_slim.py, planes 32, last_planes 1024).
    state.update({
        'down5.0.weight': torch.randn(256, 128, 3, 3), 'down5.1.weight': torch.randn(256),
        'down5.3.weight': torch.randn(512, 256, 3, 3), 'down5.4.running_var': torch.rand(512),
        'last_layer.0.weight': torch.randn(1024, 512, 1, 1), 'last_layer.1.bias': torch.randn(1024),
        'linear.weight': torch.randn(1000, 1024), 'linear.bias': torch.randn(1000),
    })
    return state


def test_the_authors_imagenet_file_fills_every_backbone_key(tmp_path):
    model = networks.create_model('ddrnet23_slim', num_classes=NUM_CLASSES)
    state = authors_imagenet_state(model)
    state['not_a_layer.weight'] = torch.zeros(3)
    path = tmp_path / 'DDRNet23s_imagenet.pth'
    # Their trainer saved through DataParallel, so the keys may carry 'module.'.
    torch.save({'state_dict': {'module.' + key: value for key, value in state.items()}}, path)
    lines = []
    missing, unexpected = load_authors_file(model, path, log=lines.append)
    assert list(unexpected) == ['not_a_layer.weight']
    assert missing and all(key.startswith(('spp.', 'final_layer.', 'seghead_extra.')) for key in missing)
    loaded = model.state_dict()
    assert torch.equal(loaded['layer1.0.conv1.weight'], state['layer1.0.conv1.weight'])
    assert torch.equal(loaded['down4.3.weight'], state['down4.3.weight'])
    assert 'not_a_layer.weight' in lines[0]
