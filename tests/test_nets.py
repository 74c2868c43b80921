"""Networks keep the contract; networks that break it are refused with the shapes named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vae_lightning.errors import ConfigError
from vae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, check_networks


@pytest.mark.parametrize(("encoder", "decoder"), [(MLPEncoder, MLPDecoder), (ConvEncoder, ConvDecoder)])
@pytest.mark.parametrize("latent_dim", [1, 2, 20])
def test_networks_keep_the_contract(encoder, decoder, latent_dim):
    enc, dec = encoder(latent_dim), decoder(latent_dim)
    mu, logvar = enc(torch.rand(5, 1, 28, 28))
    assert mu.shape == logvar.shape == (5, latent_dim)
    assert dec(mu).shape == (5, 1, 28, 28)
    check_networks(enc, dec, latent_dim)


def test_the_seed_cnn_has_the_seed_layers():
    enc, dec = ConvEncoder(20), ConvDecoder(20)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (3, 3)), (32, 16, (3, 3))]
    assert enc.head.in_features == 2304 and enc.head.out_features == 40  # mu and logvar
    transposed = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(t.in_channels, t.out_channels) for t in transposed] == [(16, 32), (32, 1)]
    assert any(isinstance(m, nn.Upsample) and m.mode == "nearest" and m.scale_factor == 2 for m in dec.modules())


def test_mlp_sizes_and_activation_are_configurable():
    enc = MLPEncoder(50, hidden_dims=[200, 200], activation="tanh")
    linears = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 200), (200, 200), (200, 100)]
    assert sum(isinstance(m, nn.Tanh) for m in enc.modules()) == 2


class MeanOnly(nn.Module):
    def __init__(self, latent_dim: int = 2):
        super().__init__()
        self.net = nn.Linear(784, latent_dim)

    def forward(self, x):
        return self.net(x.flatten(1))


class SmallImages(nn.Module):
    def __init__(self, latent_dim: int = 2):
        super().__init__()
        self.net = nn.Linear(latent_dim, 16 * 16)

    def forward(self, z):
        return self.net(z).view(-1, 1, 16, 16)


class Rounded(MLPDecoder):
    def forward(self, z):
        return super().forward(z).round().long()


class WithBatchNorm(MLPEncoder):
    def __init__(self, latent_dim: int = 2):
        super().__init__(latent_dim)
        self.norm = nn.BatchNorm1d(784)

    def forward(self, x):
        return super().forward(self.norm(x.flatten(1)).view_as(x))


@pytest.mark.parametrize(
    ("encoder", "decoder", "match"),
    [
        (
            MLPEncoder(3),
            MLPDecoder(2),
            r"model.encoder \(MLPEncoder\) must return \(mu, logvar\), each .* \(2, 2\).*"
            r"returned \[\(2, 3\), \(2, 3\)\]",
        ),
        (MeanOnly(2), MLPDecoder(2), r"model.encoder \(MeanOnly\) must return \(mu, logvar\).* returned \(2, 2\)"),
        (MLPEncoder(2), MLPDecoder(5), r"model.decoder \(MLPDecoder\) fails on latents of shape \(2, 2\)"),
        (
            MLPEncoder(2),
            SmallImages(2),
            r"model.decoder \(SmallImages\) must return logits of shape \(2, 1, 28, 28\)"
            r".* returned \(2, 1, 16, 16\)",
        ),
        (nn.Linear(10, 2), MLPDecoder(2), r"model.encoder \(Linear\) fails on MNIST images of shape \(2, 1, 28, 28\)"),
        (
            MLPEncoder(2),
            Rounded(2),
            r"model.decoder \(Rounded\) must return floating-point values, unrounded; it returned torch.int64",
        ),
    ],
)
def test_networks_that_break_the_contract_are_refused_with_shapes(encoder, decoder, match):
    with pytest.raises(ConfigError, match=match):
        check_networks(encoder, decoder, latent_dim=2)


def test_the_check_leaves_modes_and_batchnorm_statistics_alone():
    enc, dec = WithBatchNorm(2), MLPDecoder(2)
    dec.eval()
    before = enc.norm.running_mean.clone()
    check_networks(enc, dec, 2)
    assert torch.equal(enc.norm.running_mean, before)
    assert enc.training and not dec.training


@pytest.mark.parametrize(
    "setting",
    [
        ["--model.latent_dim", "0"],
        ["--model.decoder.init_args.hidden_dims", "[400, -1]"],
        ["--model.encoder.init_args.activation", "swish"],
    ],
)
def test_bad_network_sizes_are_refused_by_the_parser_naming_the_key(run_cli, capsys, setting):
    from conftest import CONFIGS, cli_error

    err = cli_error(run_cli, capsys, "fit", "--config", CONFIGS / "vanilla.yaml", *setting)
    key = setting[0][2:]
    assert f'Parser key "{key}"' in err or f'Parser key "{key.rsplit(".", 1)[-1]}"' in err
