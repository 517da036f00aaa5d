"""INT8 post-training quantization of exported students, and the fidelity report that guards it.

* `calibration_images` reads the user's images (a folder or ``builtin:NAME``)
  with ganzip's training preprocessing (resize to 286/256 of the size, crop,
  flip, values in [-1, 1]; seeded, so the same images every run) and keeps a
  few more, unaugmented, as held-out images for the fidelity check.
* `quantize_onnx` is onnxruntime's static quantization: QDQ format, per-channel
  symmetric INT8 weights, UINT8 activations calibrated by MinMax. Only the
  operators onnxruntime's CPU provider runs as integer kernels are quantized
  (convolutions, pads, adds, concats, resizes, pools); `float_operators` names
  what stays in float (InstanceNorm, transposed convolutions, the tanh
  output) and why.
* `fidelity` compares two batches of generator images: PSNR and SSIM, plus
  LPIPS when the AlexNet backbone is installed (``ganzip assets``).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from pathlib import Path

import torch

from .data import ProceduralDataset, is_builtin, open_dataset
from .errors import GanzipError
from .metrics.fidelity import from_generator, psnr, ssim
from .metrics.lpips import load_lpips

# onnxruntime runs these as integer kernels (QLinearConv, QLinearAdd, ...) once Q/DQ pairs surround them.
# ConvTranspose is not among them: the CPU provider has no integer kernel for it, so a quantized one runs in
# float between a DequantizeLinear and a QuantizeLinear (bench/int8.py's profile): it only costs accuracy.
QUANTIZED_OPS = ("Conv", "Pad", "Add", "Concat", "Resize", "MaxPool", "AveragePool")
DEFAULT_CALIBRATION_IMAGES = 64
HELD_OUT_IMAGES = 8
DEFAULT_MIN_PSNR = 30.0

FLOAT_REASONS = {
    "InstanceNormalization": "onnxruntime's CPU provider has no integer InstanceNorm kernel: quantizing around it "
                             "only adds Quantize/Dequantize pairs (slower, and its per-image statistics lose "
                             "precision on 256-level inputs), so it runs in float between integer convolutions",
    "Tanh": "the output activation: the quantizer has no Tanh rule, and keeping it float leaves the output image "
            "at full precision instead of 256 levels",
    "Sigmoid": "an output activation: kept float so the image keeps full precision",
    "Relu": "follows a float InstanceNorm; quantizing it alone would add a Quantize/Dequantize pair",
    "LeakyRelu": "follows a float normalisation; quantizing it alone would add a Quantize/Dequantize pair",
    "BatchNormalization": "not folded into a convolution here; runs in float",
    "ConvTranspose": "onnxruntime's CPU provider has no integer ConvTranspose kernel: a quantized one would run in "
                     "float between Dequantize/Quantize anyway, so it stays float and keeps its accuracy",
}


def calibration_images(source: str, size: int, n: int = DEFAULT_CALIBRATION_IMAGES,
                       held_out: int = HELD_OUT_IMAGES, direction: str = "AtoB") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(calibration batch, held-out batch, description) of generator inputs in [-1, 1].

    A folder is read the way ``ganzip compress --data`` reads it (its training
    A images); the first `n` calibrate, with training augmentation, and the
    next `held_out` (or, when there are no more, the calibration images
    unaugmented) measure fidelity.
    """
    if n < 1:
        raise GanzipError(f"--calibration-images must be at least 1, got {n}")
    try:
        if is_builtin(source):
            name = source.split(":", 1)[1]
            train = ProceduralDataset(name, n=n, size=size, split="train", direction=direction, augment=True)
            test = ProceduralDataset(name, n=held_out, size=size, split="val", direction=direction, augment=False)
        else:
            train = open_dataset(source, split="train", size=size, augment=True, direction=direction, seed=0)
            test = open_dataset(source, split="train", size=size, augment=False, direction=direction, seed=0)
    except GanzipError as exc:
        raise GanzipError(f"--calibration {source}: {exc}") from None
    total = len(train)
    if total == 0:
        raise GanzipError(f"--calibration {source}: no usable images; give a folder of the student's input images")
    used = min(n, total)
    calib = torch.stack([train[i]["A"] for i in range(used)])
    if is_builtin(source):
        held = torch.stack([test[i]["A"] for i in range(len(test))])
        evaluated_on = f"{len(test)} held-out renders (val split)"
    elif total > used:
        idx = range(used, min(total, used + held_out))
        held = torch.stack([test[i]["A"] for i in idx])
        evaluated_on = f"{len(idx)} held-out images (not used for calibration)"
    else:
        held = torch.stack([test[i]["A"] for i in range(min(used, held_out))])
        evaluated_on = f"{len(held)} of the calibration images, unaugmented (the folder has no more)"
    info = {"source": str(source), "images": used, "requested": n, "evaluated_on": evaluated_on,
            "preprocess": f"training: resize_and_crop to {size}x{size}, flip, [-1, 1]"}
    skipped = getattr(train, "skipped", 0)
    if skipped:
        info["skipped"] = train.skip_summary()
    return calib, held, info


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a tensor batch."""

    def __init__(self, images: torch.Tensor, input_name: str):
        self._items = iter([{input_name: x[None].numpy()} for x in images])

    def get_next(self):
        return next(self._items, None)


def quantize_onnx(fp32: Path, out: Path, calibration: torch.Tensor, ops=QUANTIZED_OPS,
                  exclude_nodes: list[str] | None = None) -> None:
    """Static QDQ INT8 quantization of the ONNX file `fp32` into `out`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="ganzip-quant-") as tmp, _quiet_quantizer():
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(out), _Reader(calibration, input_name), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(ops),
                            nodes_to_exclude=list(exclude_nodes or []))
        except GanzipError:
            raise
        except Exception as exc:
            raise GanzipError(f"onnxruntime quantization failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
                              "export without --int8, or --debug for the traceback") from exc


@contextlib.contextmanager
def _quiet_quantizer():
    """The quantizer logs per-tensor warnings through the root logger; keep them out of the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def float_operators(path: Path) -> dict[str, dict]:
    """Operators of a QDQ model that run in float: {op_type: {"count", "why"}}.

    An operator runs as an integer kernel when it is one onnxruntime has an
    integer kernel for, every activation input comes from a DequantizeLinear
    and its output feeds a QuantizeLinear (the pattern onnxruntime fuses into
    QLinear* kernels); any other compute node stays in float.
    """
    import onnx

    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    counts: Counter = Counter()
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        acts = [i for i in n.input if i and i not in initializers and i in producer
                and producer[i].op_type != "Constant"]
        graph_inputs = [i for i in n.input if i and i not in initializers and i not in producer]
        fed_int = bool(acts) and not graph_inputs and all(producer[i].op_type == "DequantizeLinear" for i in acts)
        out_int = all(c.op_type == "QuantizeLinear" for o in n.output for c in consumers.get(o, [])) \
            and all(consumers.get(o) for o in n.output)
        # onnxruntime only fuses Q/DQ into integer kernels for the operators it has them for
        if not (fed_int and out_int and n.op_type in QUANTIZED_OPS + ("Relu", "Clip", "Concat")):
            counts[n.op_type] += 1
    return {op: {"count": c, "why": FLOAT_REASONS.get(op, "onnxruntime's quantizer has no integer rule for it")}
            for op, c in sorted(counts.items())}


def operator_counts(path: Path) -> dict[str, int]:
    import onnx

    return dict(sorted(Counter(n.op_type for n in onnx.load(str(path)).graph.node).items()))


def load_lpips_if_present():
    """AlexNet LPIPS when its backbone file is installed, else (None, why)."""
    try:
        return load_lpips("alex", offline=True), None
    except Exception as exc:  # noqa: BLE001 - a missing asset only drops the column
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, text.split(". Looked in")[0] + " (install it with `ganzip assets import FILE`)"


def fidelity(reference: torch.Tensor, candidate: torch.Tensor, lpips=None) -> dict:
    """Mean PSNR (dB), SSIM and LPIPS (None without `lpips`) of `candidate` against `reference`, both in [-1, 1]."""
    a, b = from_generator(reference), from_generator(candidate)
    out = {"psnr": float(psnr(a, b).mean()), "psnr_min": float(psnr(a, b).min()), "lpips": None}
    try:
        out["ssim"] = float(ssim(a, b).mean())
    except GanzipError:  # images under 11 px
        out["ssim"] = None
    if lpips is not None:
        out["lpips"] = float(lpips(reference.float(), candidate.float()).mean())
    return out


def run_batch(run, images: torch.Tensor) -> torch.Tensor:
    """Run a batch-1 runner over every image of a batch."""
    return torch.cat([run(x[None]) for x in images])
