"""Attention layers: `context, weights = layer(query, value, key=None, ...)`."""

from multiattn.attention.bahdanau import BahdanauAttention
from multiattn.attention.base import BaseAttention, masked_softmax
from multiattn.attention.key_value import KeyValueAttention
from multiattn.attention.local import LOCAL_MODES, LocalAttention
from multiattn.attention.luong import LuongAttention

NAMES = ("bahdanau", "luong-dot", "luong-general", "luong-concat", "key-value")


def get(identifier, units=128, **kwargs):
    """Returns an attention layer from a name, or `identifier` itself if it is a layer.

    Args:
        identifier: One of `"bahdanau"`, `"luong-dot"`, `"luong-general"`,
            `"luong-concat"`, `"key-value"`, or a `BaseAttention` instance.
        units: Hidden size of the additive scores (`bahdanau`, `luong-concat`) and
            the projection size of `key-value` (both keys and values).
        **kwargs: Passed to the layer's constructor (`dropout`, `use_coverage`, ...).

    Examples:
        >>> layer = get("luong-general", use_scale=True)
        >>> layer.score_mode
        'general'
    """
    if isinstance(identifier, BaseAttention):
        return identifier
    if identifier == "bahdanau":
        return BahdanauAttention(units, **kwargs)
    if isinstance(identifier, str) and identifier.startswith("luong-"):
        score_mode = identifier[len("luong-") :]
        if score_mode in ("dot", "general", "concat"):
            units = units if score_mode == "concat" else None
            return LuongAttention(score_mode, units=units, **kwargs)
    if identifier == "key-value":
        return KeyValueAttention(key_units=units, value_units=units, **kwargs)
    raise ValueError(f"Unknown attention {identifier!r}; expected one of {', '.join(NAMES)}")


__all__ = [
    "NAMES",
    "BahdanauAttention",
    "BaseAttention",
    "KeyValueAttention",
    "LOCAL_MODES",
    "LocalAttention",
    "LuongAttention",
    "get",
    "masked_softmax",
]
