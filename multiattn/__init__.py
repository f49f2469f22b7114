"""multiattn: attention layers, attentional decoders and search for Keras 3."""

from multiattn import attention

__version__ = "0.1.0"

__all__ = ["attention", "__version__"]
