"""Decoders: `logits, state, weights = decoder.step(token_ids, state, memory, memory_mask)`."""

from multiattn.decoders.attention_decoder import AttentionDecoder, masked_mean
from multiattn.decoders.plain_decoder import PlainDecoder

__all__ = ["AttentionDecoder", "PlainDecoder", "masked_mean"]
