"""SANet deployment toolkit: model, data, training, export, engines and benchmark."""
from .errors import SanetError
from .model import ModelConfig, SANet, build_model

__version__ = "0.1.0"
__all__ = ["SANet", "ModelConfig", "SanetError", "build_model", "__version__"]
