import numpy as np
import pytest
import torch

from simulator.core.model import PARTS, ModelConfig, TDSSM, count_parameters
from simulator.core.ncp import NCPDecoder
from simulator.core.s4d import causal_fft_conv, s4d_kernel
from tests.helpers import tiny_model


def test_parameter_counts_match_the_paper():
    counts = count_parameters(TDSSM(ModelConfig(d_model=128)))
    assert counts["total"] == 58_509
    assert counts["middle"] == 49_920
    assert counts["encoder"] + counts["decoder"] == 8_589
    assert counts["mask_entries"] == 1_369


def test_masks_are_buffers_not_parameters():
    model = TDSSM()
    assert not any("mask" in name for name, _ in model.named_parameters())
    assert sum(b.numel() for n, b in model.named_buffers() if n.endswith("mask")) == 1_369


def test_parts_are_addressable_by_name():
    model = TDSSM(ModelConfig(d_model=8))
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == set(PARTS)
    with pytest.raises(KeyError, match="parts are"):
        model.part("head")


def test_dimensions_are_parameters():
    model = TDSSM(ModelConfig(d_model=24, d_state=16, n_leads=3, n_classes=4, ncp_units=12))
    assert model(torch.randn(2, 50, 3)).shape == (2, 4)


def _direct_kernel(conv, L):
    """The straightforward construction: exp over the whole (H, N/2, L) tensor."""
    dt = torch.exp(conv.log_dt)[:, None]
    A = torch.complex(-torch.exp(conv.log_A_real), conv.A_imag)
    C = torch.view_as_complex(conv.C) * (torch.exp(A * dt) - 1) / A
    V = torch.exp((A * dt)[:, :, None] * torch.arange(L))
    return 2 * torch.einsum("hn,hnl->hl", C, V).real


@pytest.mark.parametrize("L", [1, 7, 64, 1000, 4096])
def test_chunked_kernel_equals_direct_construction(L):
    torch.manual_seed(0)
    conv = TDSSM(ModelConfig(d_model=8)).middle.s4d.conv.double()
    K = s4d_kernel(conv.log_dt, conv.log_A_real, conv.A_imag, conv.C, L)
    torch.testing.assert_close(K, _direct_kernel(conv, L), rtol=1e-9, atol=1e-9)


def test_fft_convolution_is_causal_and_exact():
    torch.manual_seed(0)
    u = torch.randn(2, 3, 40, dtype=torch.float64, requires_grad=True)
    K = torch.randn(3, 40, dtype=torch.float64, requires_grad=True)
    direct = torch.stack([torch.nn.functional.conv1d(
        torch.nn.functional.pad(u[:, h:h + 1], (39, 0)), K[h].flip(0)[None, None]) for h in range(3)], dim=1)[:, :, 0]
    torch.testing.assert_close(causal_fft_conv(u, K), direct)
    assert torch.autograd.gradcheck(causal_fft_conv, (u, K))
    # Changing the future does not change the past.
    v = u.detach().clone()
    v[..., 30:] += 1.0
    torch.testing.assert_close(causal_fft_conv(v, K)[..., :30], causal_fft_conv(u, K)[..., :30])


def test_prediction_does_not_depend_on_batch_neighbours():
    model = tiny_model(dropout=0.1).eval()
    x = torch.randn(6, 64, 12)
    alone = torch.cat([model(x[i:i + 1]) for i in range(6)])
    together = model(x)
    shuffled = model(x.flip(0)).flip(0)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shuffled, alone, rtol=1e-5, atol=1e-6)


def test_decoder_matches_ncps_wired_cfc():
    ncps_torch = pytest.importorskip("ncps.torch")
    from ncps.wirings import AutoNCP

    torch.manual_seed(0)
    ref = ncps_torch.CfC(128, AutoNCP(20, 6, sparsity_level=0.5), batch_first=True, return_sequences=False)
    ours = NCPDecoder(128, units=20, n_outputs=6, sparsity=0.5)
    with torch.no_grad():
        for mine, theirs in zip(ours.layers, ref.rnn_cell._layers):
            mine.mask.copy_(theirs.sparsity_mask)
            mine.ff.weight.copy_(torch.cat([theirs.ff1.weight, theirs.ff2.weight]))
            mine.ff.bias.copy_(torch.cat([theirs.ff1.bias, theirs.ff2.bias]))
            mine.time.weight.copy_(torch.cat([theirs.time_a.weight, theirs.time_b.weight]))
            mine.time.bias.copy_(torch.cat([theirs.time_a.bias, theirs.time_b.bias]))
    features = torch.randn(16, 128)
    expected, _ = ref(features[:, None, :])  # each sample its own length-1 sequence
    torch.testing.assert_close(ours(features), expected, rtol=1e-5, atol=1e-5)


def test_wiring_has_autoncp_shape_and_reaches_every_neuron():
    w = NCPDecoder(128).wiring
    assert w.layer_sizes == (9, 5, 6)
    for adj in (w.sensory_to_inter, w.inter_to_command, w.command_to_motor):
        assert set(np.unique(adj)) <= {0.0, 1.0}
        assert (adj.sum(axis=0) > 0).all()  # every destination neuron has an input
    assert (w.sensory_to_inter.sum(axis=1) == 4).all()  # fan-out = 9 inter x density 0.5
