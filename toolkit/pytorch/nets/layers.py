"""Small modules shared by training and export: the uint8 NHWC input head of the contract."""

import torch
from torch import nn


class UInt8Normalize(nn.Module):
    """uint8 [N, H, W, 3] RGB → float32 [N, 3, H, W], scaled to [0, 1] and normalised per channel.

    The /255 is folded into the constants, so the graph is Cast, Transpose, Sub, Mul.
    """

    # Buffers, declared so that the type checker sees tensors rather than nn.Module's __getattr__.
    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("scale", scale, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        return (x - self.mean) * self.scale


class Classifier(nn.Module):
    """The contract form of a classifier: uint8 NHWC image → logits."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.pre = UInt8Normalize(mean, std)
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.pre(image))


class ImageGenerator(nn.Module):
    """The contract form of a generator: z float32 [N, latent] → uint8 [N, H, W, 3] RGB.

    tanh output in [-1, 1] → [0, 255], rounded, clamped and cast inside the graph."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = (self.generator(z) + 1.0) * 127.5
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class FlipAveraged(nn.Module):
    """Test-time augmentation inside the graph: the mean of a contract classifier's logits on the
    image and on its horizontal mirror. Same uint8 NHWC input and logits output as the classifier;
    the mirrored images ride in the same batch, so the network runs once."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(torch.cat([image, image.flip(2)]))
        return logits.view(2, image.shape[0], -1).mean(0)
