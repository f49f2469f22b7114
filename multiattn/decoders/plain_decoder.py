import keras

from multiattn.decoders.attention_decoder import AttentionDecoder


@keras.saving.register_keras_serializable(package="multiattn")
class PlainDecoder(AttentionDecoder):
    """An LSTM decoder without attention: the baseline attention is measured against.

    The source reaches the decoder only through its initial state, a learned bridge
    from the encoder's final state (or the mean of the memory): the fixed-vector
    bottleneck of Sutskever et al. 2014. The whole target runs through the LSTMs at
    once in training, and `call` returns the logits alone; `step` has the contract of
    `AttentionDecoder.step` and returns `None` attention weights. Pair it with
    `Seq2Seq(reverse_source=True)` for the source reversal of the paper.

    Args:
        vocab_size: Size of the target vocabulary (id 0 is padding).
        embedding_dim: Size of the target embeddings.
        units: Size of each LSTM layer.
        num_layers: Number of stacked LSTM layers.
        dropout: Dropout on the embeddings, between layers and before the output.
        tie_embeddings: Logits from the transposed target embeddings (see
            `AttentionDecoder`).
        seed: Seed of the dropout.
        **kwargs: Standard layer arguments.

    Examples:
        >>> decoder = PlainDecoder(vocab_size=20, embedding_dim=8, units=16)
        >>> logits = decoder(keras.ops.ones((2, 5), "int32"), keras.ops.ones((2, 7, 4)))
        >>> tuple(logits.shape)
        (2, 5, 20)

    Reference:
        Sutskever, Vinyals & Le, "Sequence to Sequence Learning with Neural
        Networks", NeurIPS 2014 (arXiv:1409.3215).
    """

    def __init__(
        self,
        vocab_size,
        embedding_dim,
        units,
        num_layers=1,
        dropout=0.0,
        tie_embeddings=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            vocab_size,
            embedding_dim,
            units,
            attention=None,
            num_layers=num_layers,
            dropout=dropout,
            bridge="learned",
            tie_embeddings=tie_embeddings,
            seed=seed,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        for key in (
            "attention",
            "attention_units",
            "attention_order",
            "input_feeding",
            "bridge",
            "use_coverage",
            "use_gate",
        ):
            config.pop(key)
        return config
