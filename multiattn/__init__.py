"""multiattn: attention layers, attentional decoders and search for Keras 3."""

from multiattn import attention, decoders, encoders, losses, search, special_tokens
from multiattn.attention import (
    BahdanauAttention,
    KeyValueAttention,
    LocalAttention,
    LuongAttention,
)
from multiattn.decoders import AttentionDecoder, PlainDecoder
from multiattn.encoders import BiLSTMEncoder, ImageGridEncoder
from multiattn.losses import MaskedCrossEntropy, PolicyGradientLoss
from multiattn.search import (
    BeamSearch,
    GreedySearch,
    RandomSampling,
    beam_search,
    greedy_search,
    sample,
)
from multiattn.seq2seq import Seq2Seq
from multiattn.seq2seq_ensemble import Seq2SeqEnsemble
from multiattn.special_tokens import (
    END_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    START_ID,
    UNKNOWN_ID,
)

__version__ = "0.1.0"

__all__ = [
    "END_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "START_ID",
    "UNKNOWN_ID",
    "AttentionDecoder",
    "BahdanauAttention",
    "BeamSearch",
    "BiLSTMEncoder",
    "GreedySearch",
    "ImageGridEncoder",
    "KeyValueAttention",
    "LocalAttention",
    "LuongAttention",
    "MaskedCrossEntropy",
    "PlainDecoder",
    "PolicyGradientLoss",
    "RandomSampling",
    "Seq2Seq",
    "Seq2SeqEnsemble",
    "__version__",
    "attention",
    "beam_search",
    "decoders",
    "encoders",
    "greedy_search",
    "losses",
    "sample",
    "search",
    "special_tokens",
]
