"""Runs an exported TorchScript model as a user without Tessera would (used by the export tests).

    /usr/bin/python3 run_torchscript.py MODEL.pt INPUTS.f32 SHAPE OUT.f32

INPUTS.f32 holds raw float32 little-endian inputs of SHAPE (comma-separated, batch first); the
logits are written to OUT.f32 the same way, row-major. Needs python3-torch (torch 1.13).
"""

import struct
import sys

import torch


def main() -> None:
    model_path, inputs_path, shape, out_path = sys.argv[1:5]
    model = torch.jit.load(model_path)
    model.eval()
    dims = [int(d) for d in shape.split(",")]
    with open(inputs_path, "rb") as f:
        x = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).reshape(dims)
    with torch.no_grad():
        logits = model(x)
    values = logits.contiguous().flatten().tolist()
    with open(out_path, "wb") as f:
        f.write(struct.pack("<%df" % len(values), *values))


if __name__ == "__main__":
    main()
