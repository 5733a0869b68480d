"""DCGAN for 64×64 RGB images (Radford, Metz & Chintala 2016).

Generator: z float32 [N, latent] → image in [-1, 1], float32 [N, 3, 64, 64] (tanh).
Discriminator: image [N, 3, 64, 64] → one logit per image.
"""

import torch
from torch import nn


class Generator(nn.Module):
    def __init__(self, latent_dim: int = 100, width: int = 64):
        super().__init__()
        self.latent_dim = latent_dim

        def up(cin, cout):
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.main = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, width * 8, 4, 1, 0, bias=False),   # → 512 × 4 × 4
            nn.BatchNorm2d(width * 8), nn.ReLU(True),
            *up(width * 8, width * 4),                                        # → 256 × 8 × 8
            *up(width * 4, width * 2),                                        # → 128 × 16 × 16
            *up(width * 2, width),                                            # → 64 × 32 × 32
            nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False),                # → 3 × 64 × 64
            nn.Tanh(),
        )
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """The paper's discriminator; with `spectral_norm` every conv is spectrally normalised
    (Miyato et al. 2018) and the batch norms go: the normalisation bounds its Lipschitz constant."""

    def __init__(self, width: int = 64, spectral_norm: bool = False):
        super().__init__()

        def conv(cin, cout, stride=2, padding=1):
            c = nn.Conv2d(cin, cout, 4, stride, padding, bias=spectral_norm)
            return nn.utils.parametrizations.spectral_norm(c) if spectral_norm else c

        def down(cin, cout):
            return [conv(cin, cout), *([] if spectral_norm else [nn.BatchNorm2d(cout)]), nn.LeakyReLU(0.2, True)]

        self.main = nn.Sequential(
            conv(3, width), nn.LeakyReLU(0.2, True),                          # → 64 × 32 × 32
            *down(width, width * 2),                                          # → 128 × 16 × 16
            *down(width * 2, width * 4),                                      # → 256 × 8 × 8
            *down(width * 4, width * 8),                                      # → 512 × 4 × 4
            conv(width * 8, 1, 1, 0),                                         # → 1 × 1 × 1
        )
        if not spectral_norm:         # the paper's N(0, 0.02); normalised convs keep PyTorch's default
            init_weights(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image).flatten()


def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
