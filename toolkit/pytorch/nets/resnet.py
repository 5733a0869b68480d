"""cifar-resnet: a small residual CIFAR-10 network with BatchNorm (1.97 M parameters).

The shape follows the fast CIFAR-10 recipes of the airbench line of work (three stages that each
halve the resolution, global max-pool, scaled-down logits), with a residual branch per stage:

    stem: fixed 2×2 patch whitening (24 filters) → ReLU  →  stage(w1) → stage(w2) → stage(w3)
          → global max-pool → linear / 8
    stage(c): conv3×3 → max-pool 2 → BN → ReLU = y;  y + ReLU(BN(conv3×3(y)))

Every 3×3 conv starts with its first filters as the identity (airbench's partial identity
initialisation), so each stage starts close to passing its input through.

ReLU rather than GELU: Conv+BN+ReLU folds into one quantized convolution in onnxruntime's int8
graph. Input: float32 [N, 3, 32, 32], normalised; output: logits.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (64, 256, 256)
# whiten: airbench's fixed 2×2 patch-whitening layer (shipped) | conv: a learned 3×3 conv + BN.
STEM = "whiten"
WHITEN_EPS = 5e-4


def conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]


class Stage(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(cout)
        self.branch = nn.Sequential(*conv_bn(cout, cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.pool(self.conv(x))))
        return y + self.branch(y)


class CifarResNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = WIDTHS, stem: str = STEM,
                 whiten_eps: float = WHITEN_EPS, temperature: float = 8.0):
        super().__init__()
        self.stem_kind, self.whiten_eps = stem, whiten_eps
        if stem == "whiten":
            # 2×2 patch whitening: set once from training patches (init_whitening) and kept fixed.
            self.stem = nn.Sequential(nn.Conv2d(3, 24, 2, padding=0, bias=True), nn.ReLU(inplace=True))
            stem_width = 24
        else:
            self.stem = nn.Sequential(*conv_bn(3, 32), nn.ReLU(inplace=True))
            stem_width = 32
        self.stages = nn.Sequential(Stage(stem_width, widths[0]), Stage(widths[0], widths[1]),
                                    Stage(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        with torch.no_grad():
            for m in self.stages.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.dirac_(m.weight[:min(m.in_channels, m.out_channels)])
        # Dividing the logits by a constant keeps them small early on; exported as a scaled weight.
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.pool(self.stages(x)).flatten(1)
        return self.head(x) / self.temperature


@torch.no_grad()
def init_whitening(net: CifarResNet, images: torch.Tensor) -> None:
    """Set the first layer to ±the eigenvectors of the 2×2-patch covariance, scaled to unit variance.

    `images`: float32 [N, 3, H, W], normalised like the network's input (a few thousand suffice).
    Half the filters are the negated other half, so the ReLU after them keeps both signs.
    """
    conv = net.stem[0]
    assert isinstance(conv, nn.Conv2d) and net.stem_kind == "whiten"
    half = conv.out_channels // 2
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1)                    # N, 3, H-1, W-1, 2, 2
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)                 # ascending
    largest, directions = eigenvalues.flip(0)[:half], eigenvectors.flip(1)[:, :half]
    filters = (directions / torch.sqrt(largest + net.whiten_eps)).T.reshape(half, 3, 2, 2).float()
    conv.weight.copy_(torch.cat([filters, -filters]))
    if conv.bias is not None:
        conv.bias.zero_()
    conv.weight.requires_grad_(False)
