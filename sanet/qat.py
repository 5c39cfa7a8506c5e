"""Quantization-aware training (QAT) with NVIDIA's Model Optimizer, and the Q/DQ ONNX written from its ranges.

Training side (the training host only; ``pip install 'sanet[qat]'``): ``sanet-train`` with ``init: CHECKPOINT`` and
``qat: true`` (``configs/camvid-qat.yaml``) calls :func:`quantize`, fine-tunes, and saves with
:func:`save_qat_checkpoint`.

* **Where.** Every ``nn.Conv2d`` gets Model Optimizer's fake quantization, nothing else: its input per tensor
  (symmetric int8, -128..127) and its weight per output channel (symmetric int8, -127..127, so a sign moved into the
  integers at export never overflows). That is TensorRT's placement for explicit quantization (Q/DQ on the inputs of
  weighted layers; TensorRT fuses the Q/DQ pairs into its INT8 kernels). SFF's two 1-D attention convolutions (5 taps
  on a 256-long descriptor, no measurable compute) and everything between convolutions (SCE's pooling matmuls, GeM,
  resizes, sigmoids, adds) stay float. The auxiliary head exists only in training and is not quantized.
* **Ranges.** Model Optimizer's ``max`` calibration over training crops sets every amax once; fine-tuning keeps them
  (static ranges) and trains the weights under them, so the amax values saved are exactly the ones training used.
* **BatchNorm** is frozen during QAT (eval mode: running statistics, no updates; gamma and beta still train), so the
  network trained is the one deployed. The export folds it exactly: per output channel, BN multiplies the
  dequantized weights by s = gamma / sqrt(var + eps); the int8 weights stay those training used and the channel's
  scale becomes amax * |s| / 127 (a negative s flips the integers' sign).
* **Checkpoint.** ``save_qat_checkpoint`` writes safetensors with the float32 weights of a plain SANet
  (``checkpoints.load_model`` loads it strictly as FP32) and, in the metadata under ``sanet_qat``, the amax of
  every quantizer (``{"quantizers": {"resnet.conv1.0": {"input": amax, "weight": [amax per channel]}, ...}}``).

Export side (no Model Optimizer: onnx and numpy; ``sanet-export QAT.safetensors --res H W --qdq``):
:func:`write_qdq` inserts QuantizeLinear/DequantizeLinear before each of those convolutions of the FP32 export (found
by their weight initializer, which the classic exporter names after the parameter) and replaces their float weights by
int8 ones with per-channel scales; biases stay float. No calibration data is read.
"""
import hashlib
import json
import os
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from .errors import SanetError, require
from .model import AUX_PREFIX

QAT_KEY = "sanet_qat"  # safetensors metadata key of the quantizer ranges
QAT_FORMAT = 1
NUM_BITS = 8
MAX_BOUND = 2 ** (NUM_BITS - 1) - 1  # 127: scale = amax / 127
INSTALL_HINT = "pip install 'sanet[qat]'"
MIN_OPSET = 13  # per-channel DequantizeLinear (the axis attribute) arrived in opset 13


def import_modelopt():
    """``modelopt.torch.quantization``, or one SanetError naming the extra to install."""
    with _quiet():  # its import warns about optional packages (transformers) that QAT of a CNN never needs
        return require("modelopt.torch.quantization", INSTALL_HINT)


def modelopt_config():
    """Model Optimizer's quantization config: int8 on every nn.Conv2d (see the module docstring), max calibration."""
    return {"quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "parent_class": "nn.Conv2d",
         "cfg": {"num_bits": NUM_BITS, "axis": 0, "narrow_range": True}},
        {"quantizer_name": "*input_quantizer", "parent_class": "nn.Conv2d", "cfg": {"num_bits": NUM_BITS, "axis": None}},
        {"quantizer_name": AUX_PREFIX + "*", "enable": False},
    ], "algorithm": "max"}


def quantize(model, forward_loop=None, ranges=None):
    """Insert Model Optimizer's fake quantizers into ``model`` (in place; parameters stay the same objects, so an
    optimizer built before still trains them) and set their ranges: calibrated by ``forward_loop(model)`` (training
    crops through the eval-mode model), or taken from ``ranges`` (a checkpoint's, :func:`read_ranges`)."""
    mtq = import_modelopt()
    if (forward_loop is None) == (ranges is None):
        raise SanetError("QAT ranges come from calibration or from a checkpoint: give one of forward_loop, ranges")
    training = model.training
    model.eval()  # calibration sees eval-mode BatchNorm, as QAT and the export do
    with _quiet(), torch.no_grad():
        mtq.quantize(model, modelopt_config(), forward_loop)  # without a loop only weight ranges are computed
    model.train(training)
    if ranges is not None:
        set_ranges(model, ranges)
    ranges_of(model)  # every quantized convolution has finite, usable ranges
    return model


def quantized_convs(model):
    """[(module name, conv)] of the convolutions whose quantizers are enabled, in module order."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and getattr(getattr(module, "input_quantizer", None), "is_enabled", False)]


def ranges_of(model):
    """The amax of every enabled quantizer: {"quantizers": {module: {"input": float, "weight": [float per channel]}}}."""
    quantizers = {}
    for name, conv in quantized_convs(model):
        entry = {"input": conv.input_quantizer.amax, "weight": conv.weight_quantizer.amax}
        if any(amax is None for amax in entry.values()):
            raise SanetError("quantizer of {} has no range: calibrate before saving".format(name))
        weight = entry["weight"].detach().float().reshape(-1)
        if weight.numel() == 1:
            weight = weight.expand(conv.out_channels)
        entry = {"input": float(entry["input"].detach().float().reshape(())), "weight": [float(v) for v in weight]}
        if not (np.isfinite(entry["input"]) and entry["input"] > 0 and np.all(np.isfinite(entry["weight"]))):
            raise SanetError("quantizer of {} has an unusable range (input amax {}): the model or its calibration "
                             "data is broken".format(name, entry["input"]))
        quantizers[name] = entry
    if not quantizers:
        raise SanetError("the model has no quantized convolutions: run qat.quantize first")
    return {"format": QAT_FORMAT, "num_bits": NUM_BITS, "quantizers": quantizers}


def ranges_from_state(state):
    """The ranges held in a quantized model's state dict (``<conv>.input_quantizer._amax`` and
    ``<conv>.weight_quantizer._amax``, e.g. a QAT run's last.pt), in the form of :func:`ranges_of`."""
    quantizers = {}
    for key, value in state.items():
        for kind in ("input", "weight"):
            suffix = ".{}_quantizer._amax".format(kind)
            if key.endswith(suffix):
                values = [float(v) for v in value.float().reshape(-1)]
                quantizers.setdefault(key[:-len(suffix)], {})[kind] = values[0] if kind == "input" else values
    if not quantizers:
        raise SanetError("this checkpoint holds no quantizer ranges: it is not from a QAT run")
    return {"format": QAT_FORMAT, "num_bits": NUM_BITS, "quantizers": quantizers}


def set_ranges(model, ranges):
    """Give the model's quantizers the amax values of ``ranges`` (every quantized conv must be listed, and only those)."""
    wanted = ranges["quantizers"]
    convs = dict(quantized_convs(model))
    if set(convs) != set(wanted):
        missing, extra = sorted(set(convs) - set(wanted)), sorted(set(wanted) - set(convs))
        raise SanetError("QAT ranges do not fit this model ({} missing, {} unknown, e.g. {})".format(
            len(missing), len(extra), (missing + extra)[0]))
    for name, conv in convs.items():
        device = conv.weight.device
        conv.input_quantizer.amax = torch.tensor(wanted[name]["input"], dtype=torch.float32, device=device)
        weight = torch.tensor(wanted[name]["weight"], dtype=torch.float32, device=device)
        conv.weight_quantizer.amax = weight.reshape(conv.weight_quantizer.amax.shape if weight.numel() > 1 else ())


def freeze_batchnorm(model):
    """Put every BatchNorm in eval mode (running statistics, not updated): QAT trains the function it deploys."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def plain_state_dict(model):
    """The weights of the plain SANet inside a quantized one (quantizer buffers dropped), as float32 tensors."""
    return {key: value.detach().cpu().float().contiguous() for key, value in model.state_dict().items()
            if "_quantizer." not in key}


def ranges_digest(ranges):
    """sha256 of the ranges' canonical JSON: names the quantization in the exported file's metadata."""
    return hashlib.sha256(json.dumps(ranges, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_qat_checkpoint(path, model, extra_metadata=None):
    """Write ``model`` (quantized by :func:`quantize`) as safetensors: float32 weights of a plain SANet plus its
    ranges in the metadata; atomic, and read back (strict FP32 load, same ranges) before it takes ``path``."""
    from safetensors.torch import save_file

    from .checkpoints import CONFIG_KEY, load_model
    from .fileio import atomic_path

    if not str(path).endswith(".safetensors"):
        raise SanetError("a QAT checkpoint is written as .safetensors, not {}".format(path))
    from modelopt import __version__ as modelopt_version

    ranges = dict(ranges_of(model), tool="nvidia-modelopt " + modelopt_version, **(extra_metadata or {}))
    state = plain_state_dict(model)

    def verify(tmp):
        load_model(tmp)  # strict: a plain FP32 SANet
        if read_ranges(tmp) != json.loads(json.dumps(ranges)):
            raise SanetError("cannot save QAT checkpoint {}: its ranges do not read back; the previous file was left "
                             "unchanged".format(path))

    with atomic_path(path, verify) as tmp:
        save_file(state, tmp, metadata={CONFIG_KEY: json.dumps(model.config.to_dict()), QAT_KEY: json.dumps(ranges)})
    return ranges


def read_ranges(path) -> Optional[dict]:
    """The quantizer ranges a QAT checkpoint carries, or None for any other checkpoint."""
    path = os.fspath(path)
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        return None
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            text = (handle.metadata() or {}).get(QAT_KEY)
    except Exception as exc:  # safetensors raises its own types for corrupt headers
        raise SanetError("checkpoint {} is corrupt, truncated or not a checkpoint ({}): re-download or re-save it".format(
            path, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)) from exc
    if text is None:
        return None
    try:
        ranges = json.loads(text)
        valid = ranges.get("format") == QAT_FORMAT and ranges.get("num_bits") == NUM_BITS and all(
            set(entry) == {"input", "weight"} for entry in ranges["quantizers"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise SanetError("checkpoint {} has unreadable QAT ranges ({}): write it again with this sanet".format(path, QAT_KEY))
    return ranges


def fake_quant_model(path):
    """The checkpoint's network with Model Optimizer's fake quantization and its saved ranges (eval mode): what QAT
    trained, and what the Q/DQ export must reproduce."""
    from .checkpoints import load_model

    ranges = read_ranges(path)
    if ranges is None:
        raise SanetError("{} carries no QAT ranges: it is not a QAT checkpoint".format(path))
    return quantize(load_model(path), ranges=ranges).eval()


# ----------------------------------------------------------------------------------------------
# Q/DQ export from the ranges


def fold_scales(model):
    """{conv module name: (C_out,) float32 s}: the factor BatchNorm folding multiplies each output channel's weights
    by (1 where no BatchNorm follows). Computed by folding a copy whose conv weights are all 1 with the export's own
    ``fold_batchnorm``, so the pairing of convs and BatchNorms is the export's, not a second copy of it."""
    from .model import fold_batchnorm

    probe = _plain_copy(model)
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0)
    folded = dict(fold_batchnorm(probe).named_modules())
    return {name: folded[name].weight.detach().reshape(module.out_channels, -1)[:, 0].clone()
            for name, module in probe.named_modules() if isinstance(module, nn.Conv2d)}


def _plain_copy(model):
    """A float32 CPU copy of the plain SANet in ``model`` (quantized or not)."""
    from .model import SANet

    config = model.config
    plain = SANet(type(config).from_dict(config.to_dict()))
    plain.load_state_dict(plain_state_dict(model), strict=True)
    return plain.eval()


def int8_weights(weight, amax):
    """Model Optimizer's integer weights: round(w * (127 / amax)) clamped to -127..127 per output channel, computed
    as its fake quantization computes them (float32, round half to even; an amax of 0 gives zeros).
    weight (C_out, ...) float32, amax (C_out,) -> int8 array of the weight's shape."""
    weight = weight.detach().float()
    amax = amax.float().reshape(-1, *([1] * (weight.dim() - 1)))
    scale = torch.tensor(float(MAX_BOUND)) / amax
    scale = torch.where(amax > 2.0 ** -24, scale, torch.zeros_like(scale))  # modelopt: amax ~ 0 quantizes to 0
    return torch.clamp((weight * scale).round(), -MAX_BOUND, MAX_BOUND).to(torch.int8).numpy()


def write_qdq(onnx_path, out_path, model, ranges):
    """Write the Q/DQ INT8 twin of the FP32 export ``onnx_path`` (made from ``model``) with the QAT ``ranges``:
    per-tensor int8 Q/DQ on the input of every quantized convolution, per-channel int8 weights (BatchNorm folded into
    their scales, see the module docstring), float biases. Nothing is calibrated; returns ``out_path``."""
    onnx = require("onnx", "pip install 'sanet[onnx]'")
    from onnx import helper, numpy_helper

    from .export import read_metadata, set_metadata
    from .fileio import atomic_path
    from .trtlint import default_opset

    meta = read_metadata(onnx_path, required=True)
    if meta.get("sanet.precision", "fp32") != "fp32":
        raise SanetError("{} is already quantized: write the Q/DQ file from the FP32 export".format(onnx_path))
    proto = onnx.load(os.fspath(onnx_path))
    opset = default_opset(proto)
    if opset < MIN_OPSET:
        raise SanetError("per-channel Q/DQ needs opset >= {}; {} is opset {}: export with --opset 13 or newer".format(
            MIN_OPSET, onnx_path, opset))
    initializers = {init.name: init for init in proto.graph.initializer}
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    scales = fold_scales(model)
    convs = dict(model.named_modules())
    by_weight = {node.input[1]: node for node in proto.graph.node if node.op_type == "Conv" and len(node.input) > 1}
    inserted = {}  # conv node name -> the Q/DQ nodes that go before it
    for name, entry in sorted(ranges["quantizers"].items()):
        weight_name = "model.{}.weight".format(name)
        node = by_weight.get(weight_name)
        if node is None or name not in convs or weight_name not in initializers:
            raise SanetError("{} has no convolution {} of the QAT ranges: export the checkpoint the ranges came "
                             "from".format(onnx_path, name))
        if consumers[weight_name] != 1:
            raise SanetError("weight {} of {} is shared by {} nodes: cannot quantize it in place".format(
                weight_name, onnx_path, consumers[weight_name]))
        amax = torch.tensor(entry["weight"], dtype=torch.float32)
        fold = scales[name]
        weight = convs[name].weight
        q = int8_weights(weight, amax) * np.sign(fold.numpy()).astype(np.int8).reshape(-1, *[1] * (weight.dim() - 1))
        step = (amax / MAX_BOUND * fold.abs()).numpy().astype(np.float32)  # (C_out,) dequantization scales
        step = np.where(step > 0, step, np.float32(1.0))  # a channel of zeros: any positive scale dequantizes to 0
        folded = numpy_helper.to_array(initializers[weight_name])  # the export's BatchNorm-folded float weights
        _check_folded(folded, q, step, weight_name, onnx_path)
        input_scale = np.float32(entry["input"] / MAX_BOUND)
        prefix = node.name or weight_name
        qname, wname = prefix + "/input_quantizer", prefix + "/weight_quantizer"
        new_init = [
            numpy_helper.from_array(np.asarray(input_scale, np.float32), qname + "/scale"),
            numpy_helper.from_array(np.zeros((), np.int8), qname + "/zero_point"),
            numpy_helper.from_array(q.reshape(folded.shape), wname + "/int8"),
            numpy_helper.from_array(step, wname + "/scale"),
            numpy_helper.from_array(np.zeros(step.shape, np.int8), wname + "/zero_point"),
        ]
        proto.graph.initializer.remove(initializers[weight_name])
        proto.graph.initializer.extend(new_init)
        source = node.input[0]
        inserted[node.name] = [
            helper.make_node("QuantizeLinear", [source, qname + "/scale", qname + "/zero_point"], [qname + "/q"],
                             name=qname + "/QuantizeLinear"),
            helper.make_node("DequantizeLinear", [qname + "/q", qname + "/scale", qname + "/zero_point"], [qname + "/dq"],
                             name=qname + "/DequantizeLinear"),
            helper.make_node("DequantizeLinear", [wname + "/int8", wname + "/scale", wname + "/zero_point"],
                             [wname + "/dq"], name=wname + "/DequantizeLinear", axis=0),
        ]
        node.input[0], node.input[1] = qname + "/dq", wname + "/dq"
    nodes = []
    for node in proto.graph.node:
        nodes.extend(inserted.get(node.name, []))
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    set_metadata(proto, dict(meta, **qdq_metadata(ranges)))
    onnx.checker.check_model(proto)
    with atomic_path(out_path) as tmp:
        onnx.save(proto, tmp)
    return out_path


def qdq_metadata(ranges):
    """The metadata that says how a QAT Q/DQ file was quantized (the pipeline's reuse check compares it)."""
    return {"sanet.precision": "int8", "sanet.quantization": "qdq", "sanet.int8_activations": "int8",
            "sanet.calibration_method": "qat", "sanet.calibration_sha256": ranges_digest({"quantizers": ranges["quantizers"]}),
            "sanet.calibration_resolution": "none", "sanet.float_groups": "",
            "sanet.qat_quantized_convs": str(len(ranges["quantizers"]))}


def _check_folded(folded, q, step, weight_name, onnx_path):
    """The int8 weights times their scales must reproduce the export's float (BatchNorm-folded) weights to half a
    step, clipped values aside: a wrong conv, stale ranges or another checkpoint's export fail here."""
    shape = (-1,) + (1,) * (folded.ndim - 1)
    limit = step.reshape(shape) * MAX_BOUND
    error = np.abs(q.astype(np.float32) * step.reshape(shape) - np.clip(folded, -limit, limit))
    if np.any(error > step.reshape(shape) * 0.5001 + 1e-6 * np.abs(folded)):
        raise SanetError("the int8 weights of {} do not reproduce {}'s weights: export the checkpoint the QAT ranges "
                         "came from".format(weight_name, onnx_path))


def _quiet():
    from .calibration import _quiet as quiet  # silences library prints, warnings and root-logger advice

    return quiet()
