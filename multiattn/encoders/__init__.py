"""Encoders: memories for the attention layers, from token ids or from images."""

from multiattn.encoders.bilstm_encoder import BiLSTMEncoder
from multiattn.encoders.image_grid_encoder import BACKBONES, ImageGridEncoder

__all__ = ["BACKBONES", "BiLSTMEncoder", "ImageGridEncoder"]
