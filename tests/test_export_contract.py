"""The deployment contract written into an exported file describes its real output (super-resolution too)."""
import json

import onnx
import onnxruntime as ort
import torch
from torch import nn

from ganzip.export import export


class TwiceUp(nn.Module):
    """A tiny x2 super-resolution generator with one output channel (grey): input 3 channels, output 1."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        return torch.tanh(self.up(self.body(x)))


def _contract(path):
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["ganzip.json"]) if "ganzip.json" in props else {
        k[len("ganzip."):]: (json.loads(v) if v[:1] in "[{" or v[:1].isdigit() else v) for k, v in props.items()}


def test_the_output_shape_is_the_models_not_the_inputs(tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "sr.onnx"
    export(TwiceUp().eval(), out=out, format="onnx", size=16, latency=False)
    contract = _contract(out)
    y = ort.InferenceSession(str(out)).run(None, {contract["input"]: torch.zeros(1, 3, 16, 16).numpy()})[0]
    assert list(y.shape) == [1, 1, 32, 32]  # measured by running the exported file
    assert contract["input_shape"] == [1, 3, 16, 16]
    assert contract["output_shape"] == list(y.shape)
    assert contract["scale"] == 2
