"""Authors a TorchScript model that Tessera clients can train.

Tessera's C++ clients train any TorchScript module whose ``forward`` maps a float tensor
``[B, 1, 28, 28]`` (more generally ``[B, *input_shape]``) to logits ``[B, num_classes]``, with
plain SGD on all parameters that require grad. This script defines two such modules for
28x28 grayscale images and 10 classes, scripts one with ``torch.jit.script`` and saves it:

    /usr/bin/python3 examples/make_torchscript_model.py model.pt              # small CNN
    /usr/bin/python3 examples/make_torchscript_model.py --tiny-mlp model.pt   # 784-16-10 MLP

Then point a client at it (``ModelSpec{.architecture = "model.pt", .input_shape = {1, 28, 28},
.num_classes = 10}``). The weights saved in the file are the federation's initial model; its
state (named parameters, then named buffers, e.g. ``fc1.weight``) is what travels each round.
Avoid dropout and other randomness in ``forward`` if runs must be reproducible: the C++ trainer
does not seed libtorch's global generator.

The test fixture tests/data/tiny_mlp_scripted.pt is made with ``--tiny-mlp`` (seed 0). Needs
PyTorch 1.13 (on Debian 12: ``/usr/bin/python3`` with the python3-torch package).
"""

import argparse

import torch
from torch import nn


class SmallCnn(nn.Module):
    """conv 5x5x16 -> ReLU -> maxpool 2 -> conv 5x5x32 -> ReLU -> maxpool 2 -> fc 128 -> fc 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


class TinyMlp(nn.Module):
    """flatten -> fc1 784x16 -> ReLU -> fc2 16x10 (12,730 parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 16)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="where to write the TorchScript .pt file")
    parser.add_argument("--tiny-mlp", action="store_true",
                        help="save the tiny 784-16-10 MLP instead of the CNN")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = TinyMlp() if args.tiny_mlp else SmallCnn()
    scripted = torch.jit.script(model)
    out = scripted(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10), out.shape
    scripted.save(args.output)
    params = sum(p.numel() for p in model.parameters())
    print(f"saved {type(model).__name__} ({params} parameters) to {args.output}")


if __name__ == "__main__":
    main()
