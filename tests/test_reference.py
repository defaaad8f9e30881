"""The batched reference equals the spec's per-patch network, tiles exactly, and trains."""


import pytest
import torch

import fastdeblur
from fastdeblur.reference import DMPHN, Decoder, Encoder, StackDMPHN
from fastdeblur.reference.tiled import apply_tiled

from .conftest import benchmark_module

official_style = benchmark_module("official_style")


def _randomize(model):
    # larger-than-init weights so every path matters numerically
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.04)
    return model.double().eval()


def test_parameter_counts_match_spec():
    assert sum(p.numel() for p in Encoder().parameters()) == 868_288
    assert sum(p.numel() for p in Decoder().parameters()) == 939_843


def test_state_dict_keys_are_checkpoint_keys():
    keys = set(Encoder().state_dict())
    assert {"layer1.weight", "layer2.0.weight", "layer2.2.bias", "layer11.2.weight"} <= keys
    assert "layer4.weight" not in keys
    dkeys = set(Decoder().state_dict())
    assert {"layer13.0.weight", "layer16.weight", "layer24.bias"} <= dkeys
    assert {k.split(".")[0] for k in DMPHN((1, 2, 4, 8)).state_dict()} == {
        f"{p}_lv{i}" for p in ("encoder", "decoder") for i in (1, 2, 3, 4)}
    assert "encoder_s4_lv3" in {k.split(".")[0] for k in StackDMPHN(4).state_dict()}


@pytest.mark.parametrize("build,official,size", [
    (lambda: DMPHN((1, 2, 4)), official_style.dmphn_124, (24, 40)),
    (lambda: DMPHN((1, 2, 4, 8)), official_style.dmphn_1248, (32, 24)),
    (lambda: StackDMPHN(3), lambda m, x: official_style.stack_dmphn(m, x, 3), (16, 32)),
])
@pytest.mark.parametrize("grad", [False, True], ids=["in-place-sums", "autograd"])
def test_batched_forward_equals_per_patch_spec(build, official, size, grad):
    model = _randomize(build())
    x = torch.rand(2, 3, *size, dtype=torch.float64) - 0.5
    with torch.set_grad_enabled(grad):  # without autograd the level sums are written in place
        got = model(x)
    with torch.no_grad():
        want = official(model, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_batch_items_are_independent():
    model = _randomize(DMPHN((1, 2, 4)))
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        whole = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(whole, single, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("net,shape,tile", [
    (Encoder, (2, 3, 200, 136), 100),
    (Decoder, (2, 128, 50, 34), 24),
])
def test_apply_tiled_is_exact(net, shape, tile):
    m = _randomize(net())
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(apply_tiled(m, x, tile, m.footprint), m(x), rtol=1e-9, atol=1e-9)


def test_halo_covers_the_receptive_field():
    # one output pixel's input footprint must fit in the declared halo (and no more is needed)
    for m, size in ((_randomize(Encoder()), 256), (_randomize(Decoder()), 64)):
        cin = 3 if isinstance(m, Encoder) else 128
        x = torch.randn(1, cin, size, size, dtype=torch.float64, requires_grad=True)
        y = m(x)
        c = y.shape[-1] // 2
        y[0, :, c, c].sum().backward()
        rows = torch.nonzero(x.grad[0].abs().sum((0, 2))).flatten()
        fp = m.footprint
        centre = c * fp.down // fp.up
        assert centre - rows.min().item() <= fp.halo
        assert rows.max().item() - centre <= fp.halo


def test_tiled_model_forward_is_exact():
    model = _randomize(DMPHN((1, 2, 4)))
    x = torch.rand(1, 3, 160, 200, dtype=torch.float64) - 0.5
    with torch.no_grad():
        torch.testing.assert_close(model(x, tile=128), model(x), rtol=1e-9, atol=1e-9)


def test_backward_reaches_every_parameter():
    model = StackDMPHN(2)
    x = torch.rand(2, 3, 16, 16) - 0.5
    loss = (model(x) - x).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_levels():
    with pytest.raises(ValueError, match="prefix"):
        DMPHN((1, 4))
    with pytest.raises(ValueError, match="stages"):
        StackDMPHN(0)


@pytest.mark.parametrize("build,multiple", [(lambda: DMPHN((1, 2, 4)), "H a multiple of 8 and W of 8"),
                                            (lambda: DMPHN((1, 2, 4, 8)), "H a multiple of 16 and W of 8"),
                                            (lambda: StackDMPHN(1), "H a multiple of 8 and W of 8")])
def test_inputs_the_modules_cannot_split_are_named(build, multiple):
    """Called directly (training, own code), a module names the sizes it takes; before, an odd
    size was a tensor-size mismatch from inside a level."""
    model = build().eval()
    for shape in ((1, 3, 30, 32), (1, 3, 32, 36), (3, 32, 32), (1, 1, 32, 32)):
        with torch.no_grad(), pytest.raises(ValueError, match=rf"x must be \[N, 3, H, W\] with {multiple} .*got "
                                                               rf"\[{', '.join(map(str, shape))}\]; "
                                                               r"fastdeblur.deblur\(\) pads any size"):
            model(torch.zeros(shape))


@pytest.mark.skipif(not fastdeblur.has_ext(), reason="extension not built")
@pytest.mark.parametrize("build", [lambda: DMPHN((1, 2, 4)), lambda: DMPHN((1, 2, 4, 8)), lambda: StackDMPHN(2)])
def test_extension_layout_equals_torch_layout(build):
    from fastdeblur.ops.layout import OpsLayout

    model = _randomize(build())
    x = (torch.rand(2, 3, 32, 24, dtype=torch.float64) - 0.5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x, layout=OpsLayout()), model(x), rtol=1e-12, atol=1e-12)


def test_torch_compile_sees_one_graph():
    """The progress hook (a ContextVar, which torch.compile cannot trace) stays out of compiled
    code: a compiled DMPHN is one graph, not one per encoder/decoder call."""
    import torch._dynamo as dynamo

    with torch.no_grad():
        explained = dynamo.explain(DMPHN((1, 2)).eval())(torch.rand(1, 3, 32, 32))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_multipatch_forward_takes_cnns_without_a_footprint():
    """multipatch_forward is public, for models of one's own: CNNs without `footprint` run whole
    (as before progress reporting needed it) and cannot be tiled, which says why."""
    from fastdeblur.reference import LEVEL_GRIDS, multipatch_forward

    class Plain(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    enc, dec = [Encoder(), Encoder()], [Decoder(), Decoder()]
    grids = [LEVEL_GRIDS[1], LEVEL_GRIDS[2]]
    x = torch.rand(1, 3, 32, 48) - 0.5
    with torch.no_grad():
        want, _ = multipatch_forward(x, enc, dec, grids)
        got, _ = multipatch_forward(x, [Plain(e) for e in enc], [Plain(d) for d in dec], grids)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        with pytest.raises(ValueError, match="Plain has no `footprint`"):
            multipatch_forward(x, [Plain(e) for e in enc], [Plain(d) for d in dec], grids, tile=16)
