"""Checkpoints: safetensors (preferred) or torch files read with weights_only=True.

A checkpoint carries the ModelConfig, so ``load_model(path)`` rebuilds the network from the file
alone. Reference-repo files (a raw state dict, ``{"state_dict": ...}``, ``module.`` prefixes) load
too; their variant and class count are inferred from tensor shapes.
"""
import json
import os
import struct
import zipfile

import torch

from .errors import SanetError
from .fileio import atomic_path
from .model import AUX_PREFIX, ModelConfig, SANet

CONFIG_KEY = "sanet_config"
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
# The checkpoints shipped in sanet/weights (fp16 safetensors; weights/PROVENANCE.md says how each was made):
#   camvid: SANet trained on real CamVid (11 classes), the model for real street images (sanet-infer, sanet-eval
#           --dataset camvid); a derivative of CamVid, for research use only.
#   synth:  SANet trained on generated street scenes (19 Cityscapes classes), so the self-contained sanet-bench
#           measures a trained network on frames it can generate itself; it does not transfer to real images.
SHIPPED_CHECKPOINTS = {"camvid": os.path.join(WEIGHTS_DIR, "sanet_camvid.safetensors"),
                       "camvid-qat": os.path.join(WEIGHTS_DIR, "sanet_camvid_qat.safetensors"),
                       "synth": os.path.join(WEIGHTS_DIR, "sanet_synth.safetensors")}
SHIPPED_ABOUT = {"camvid": "the shipped real-CamVid SANet (11 classes; research use)",
                 "camvid-qat": "the shipped real-CamVid SANet after QAT, carrying its INT8 ranges (research use)",
                 "synth": "the shipped synthetic-scene SANet (19 classes; generated scenes only)"}


def shipped_checkpoint(name="synth"):
    """Where a checkpoint shipped in ``sanet/weights`` lies.

    Args:
        name: "synth" (19 classes, generated scenes), "camvid" (11 classes, real CamVid; research use) or
            "camvid-qat" (that model after QAT, carrying its INT8 ranges); see SHIPPED_ABOUT. Another name raises
            SanetError.
    Returns:
        The file's path (str), or None when this install lacks the file. ``load_model(path)`` opens it.
    """
    if name not in SHIPPED_CHECKPOINTS:
        raise SanetError("no shipped checkpoint {!r}: use {}".format(name, " or ".join(sorted(SHIPPED_CHECKPOINTS))))
    path = SHIPPED_CHECKPOINTS[name]
    return path if os.path.isfile(path) else None


def _strip_prefixes(state_dict):
    """Drop DataParallel/DDP ``module.`` prefixes."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def save_checkpoint(path, model, extra=None, half=False):
    """Write weights + config atomically. ``.safetensors`` for weights only; ``.pt`` may carry ``extra``
    training state (optimizer, scheduler, epoch, RNG) made of tensors and plain Python values. ``half`` stores
    float tensors as fp16 (half the size; loading casts them back into the float32 network).

    The file is read back from its temporary name (safe loader, same keys and config) before it replaces
    ``path``, so a ``last.pt`` that cannot be resumed never takes the place of a good one.
    """
    config_json = json.dumps(model.config.to_dict())
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    if half:
        state = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    safetensors = str(path).endswith(".safetensors")
    if safetensors and extra:
        raise SanetError("training state needs a .pt checkpoint, not .safetensors")

    def verify(tmp):
        try:
            written, config, written_extra = read_checkpoint(tmp)
        except SanetError as exc:
            raise SanetError("cannot save checkpoint {}: the written file does not read back with the safe loader ({}); "
                             "the previous file was left unchanged".format(path, str(exc)[-120:])) from exc
        if set(written) != set(state) or config is None or config.to_dict() != ModelConfig.from_dict(json.loads(config_json)).to_dict() \
                or set(written_extra) != set(extra or {}):
            raise SanetError("cannot save checkpoint {}: the written file does not read back as written (disk full?); "
                             "the previous file was left unchanged".format(path))

    with atomic_path(path, verify) as tmp:
        if safetensors:
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={CONFIG_KEY: config_json})
        else:
            payload = {"state_dict": state, CONFIG_KEY: config_json}
            payload.update(extra or {})
            torch.save(payload, tmp)


def read_checkpoint(path):
    """Return (state_dict, config or None, extra dict) without ever unpickling arbitrary objects."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SanetError("checkpoint not found: {} (check the path)".format(path))
    with open(path, "rb") as handle:
        head = handle.read(8)
    try:
        if zipfile.is_zipfile(path) or head[:2] == b"\x80\x02":
            payload = torch.load(path, map_location="cpu", weights_only=True)
        elif len(head) == 8 and struct.unpack("<Q", head)[0] < os.path.getsize(path):
            payload = _read_safetensors(path)
        else:
            raise ValueError("neither a safetensors nor a torch file")
    except SanetError:
        raise
    except Exception as exc:  # every reader raises its own type for corrupt or truncated data
        raise SanetError(
            "checkpoint {} is corrupt, truncated or not a checkpoint ({}): re-download or re-save it".format(
                path, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        ) from exc
    if not isinstance(payload, dict):
        raise SanetError("checkpoint {} holds a {}, not a state dict".format(path, type(payload).__name__))
    state_dict = payload.get("state_dict", payload)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise SanetError("checkpoint {} has no tensor state dict under 'state_dict' or at its top level".format(path))
    # A raw state dict has nothing beside its tensors; a wrapped one may carry training state.
    extra = {} if state_dict is payload else {k: v for k, v in payload.items() if k not in ("state_dict", CONFIG_KEY)}
    config = ModelConfig.from_dict(json.loads(payload[CONFIG_KEY])) if CONFIG_KEY in payload else None
    return _strip_prefixes(state_dict), config, extra


def _read_safetensors(path):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        payload = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata() or {}
    if CONFIG_KEY in metadata:
        payload = {"state_dict": payload, CONFIG_KEY: metadata[CONFIG_KEY]}
    return payload


def infer_config(state_dict, variant=None, num_classes=None):
    """Config for a reference-format state dict that carries none: classes from the classifier shape."""
    key = "conv_out32.conv_out.weight"
    if key not in state_dict:
        raise SanetError("state dict has no '{}': not a SANet checkpoint".format(key))
    out_channels = int(state_dict[key].shape[0])
    if variant is None:
        # SANet's PixelShuffle(8) classifier has classes * 64 outputs; SANet-Tiny's has one per class.
        variant = "sanet" if out_channels % 64 == 0 else "sanet-tiny"
    classes = out_channels // 64 if variant == "sanet" else out_channels
    if num_classes is not None and num_classes != classes:
        raise SanetError("checkpoint has {} classes but {} were requested: drop --classes or use a matching file".format(
            classes, num_classes))
    aux = any(name.startswith(AUX_PREFIX) for name in state_dict)
    return ModelConfig(variant=variant, num_classes=classes, aux_head=aux)


def load_weights(model, state_dict):
    """Strict load with a one-line error naming the first few missing, unexpected or mis-shaped keys."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshaped = [
        "{} {} vs {}".format(key, tuple(state_dict[key].shape), tuple(expected[key].shape))
        for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", misshaped)):
        if keys:
            problems.append("{} {}: {}{}".format(len(keys), label, ", ".join(keys[:3]), ", ..." if len(keys) > 3 else ""))
    if problems:
        raise SanetError("checkpoint does not fit {} ({} classes): {}".format(
            model.config.variant, model.config.num_classes, "; ".join(problems)))
    model.load_state_dict(state_dict, strict=True)
    return model


def inference_copy(model):
    """``model`` without its training-only auxiliary head (what ships and deploys), in eval mode."""
    config = ModelConfig.from_dict(dict(model.config.to_dict(), aux_head=False))
    state = {key: value for key, value in model.state_dict().items() if not key.startswith(AUX_PREFIX)}
    return load_weights(SANet(config), state).eval()


def load_model(path, variant=None, num_classes=None):
    """Rebuild a SANet from a checkpoint file, ready for a runner (``TorchRunner(model)``) or an export.

    Args:
        path: a ``.safetensors`` or torch (``.pt``/``.pth``, read with weights_only=True) file: ours, which carry
            their ModelConfig, or a reference-repo state dict (variant and classes inferred from tensor shapes).
        variant: "sanet" or "sanet-tiny"; None takes the file's. A file of the other variant is refused.
        num_classes: the expected class count; None takes the file's. A mismatch is refused.
    Returns:
        A ``sanet.model.SANet`` on the CPU in float32 and eval mode (fp16 files are cast back), its ``config``
        (ModelConfig: variant, num_classes, class_names, mean, std) rebuilt from the file; ``aux_head`` is True
        only when the file has the training-only auxiliary head. The load is strict.
    Raises:
        SanetError: a missing, corrupt or foreign file, or weights that do not fit (the first few keys named).
    """
    state_dict, config, _ = read_checkpoint(path)
    if config is None:
        config = infer_config(state_dict, variant, num_classes)
    else:
        if variant is not None and variant != config.variant:
            raise SanetError("checkpoint {} is {}, not {}".format(path, config.variant, variant))
        if num_classes is not None and num_classes != config.num_classes:
            raise SanetError("checkpoint {} has {} classes, not {}".format(path, config.num_classes, num_classes))
    # Weights saved without the training-only aux head still load into an inference model.
    config.aux_head = any(name.startswith(AUX_PREFIX) for name in state_dict)
    return load_weights(SANet(config), state_dict).eval()
