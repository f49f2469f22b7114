import keras
from keras import ops

from multiattn.generative_model import GenerativeModel


@keras.saving.register_keras_serializable(package="multiattn")
class Seq2SeqEnsemble(GenerativeModel):
    """Several trained `Seq2Seq` models that decode as one.

    At every step of a search (greedy, beam or sampling) each model advances its own
    decoder state on the same tokens, and the search scores the next token by the mean
    of the models' log-probabilities, `mean_m log p_m(y | y_<i, x)` (renormalised by the
    search's softmax: the normalised geometric mean of the models' distributions). The
    attention returned is the first model's. The models must share their vocabularies
    and start and end ids; they decode together but are not trained together (`fit`
    trains no ensemble: train each model alone).

    Args:
        models: A list of `Seq2Seq` models (built, e.g. loaded from `.keras` files).
        **kwargs: Standard model arguments.

    Call arguments:
        inputs: `(source, target_in)`, as for `Seq2Seq`.

    Returns:
        `(log_probs, alignment)`: the mean of the models' teacher-forced
        log-probabilities `(batch, target_len, vocab)` and the first model's
        alignment (the log-probabilities alone when it has no attention).

    Examples:
        >>> import numpy as np
        >>> from multiattn import AttentionDecoder, BiLSTMEncoder, Seq2Seq
        >>> models = [
        ...     Seq2Seq(BiLSTMEncoder(20, 8, 16), AttentionDecoder(20, 8, 16)) for _ in range(2)
        ... ]
        >>> ensemble = Seq2SeqEnsemble(models)
        >>> source = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
        >>> ensemble.generate(source, search="beam", max_length=5)["tokens"].shape
        (2, 1, 5)

    Reference:
        Sutskever, Vinyals & Le 2014 and Luong, Pham & Manning 2015 report ensembles
        of independently trained translation models as their best systems.
    """

    def __init__(self, models, **kwargs):
        super().__init__(**kwargs)
        models = [
            keras.saving.deserialize_keras_object(model) if isinstance(model, dict) else model
            for model in models
        ]
        if not models:
            raise ValueError("Seq2SeqEnsemble needs at least one model.")
        first = models[0]
        for index, model in enumerate(models[1:], start=1):
            for name in ("start_id", "end_id"):
                if getattr(model, name) != getattr(first, name):
                    raise ValueError(
                        f"models[{index}].{name} is {getattr(model, name)}, "
                        f"models[0].{name} is {getattr(first, name)}: an ensemble's models "
                        "must share their special tokens."
                    )
            if model.decoder.vocab_size != first.decoder.vocab_size:
                raise ValueError(
                    f"models[{index}] has a target vocabulary of {model.decoder.vocab_size}, "
                    f"models[0] of {first.decoder.vocab_size}: an ensemble's models must "
                    "share their target vocabulary."
                )
        self.models = models
        self.start_id = first.start_id
        self.end_id = first.end_id

    def build(self, input_shape=None):
        for model in self.models:
            if not model.built:
                model.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        log_probs, alignment = [], None
        for index, model in enumerate(self.models):
            outputs = model(inputs, training=False)
            logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
            log_probs.append(ops.log_softmax(ops.cast(logits, "float32"), axis=-1))
            if index == 0 and isinstance(outputs, (tuple, list)):
                alignment = outputs[1]
        mean = ops.mean(ops.stack(log_probs), axis=0)  # (batch, target_len, vocab)
        return mean if alignment is None else (mean, alignment)

    def search_inputs(self, source):
        """The models' search inputs joined: one flat state and constants, and a step
        that advances every model and returns the mean of their log-probabilities."""
        step_fns, state, constants, state_ends, constant_ends = [], (), (), [0], [0]
        source_mask = None
        for index, model in enumerate(self.models):
            step_fn, model_state, model_constants, model_mask = model.search_inputs(source)
            step_fns.append(step_fn)
            state += tuple(model_state)
            constants += tuple(model_constants)
            state_ends.append(len(state))
            constant_ends.append(len(constants))
            if index == 0:
                source_mask = model_mask

        def step_fn(token_ids, state, constants):
            log_probs, new_state, attention = [], (), None
            for index, model_step in enumerate(step_fns):
                logits, model_state, weights = model_step(
                    token_ids,
                    tuple(state[state_ends[index] : state_ends[index + 1]]),
                    tuple(constants[constant_ends[index] : constant_ends[index + 1]]),
                )
                log_probs.append(ops.log_softmax(ops.cast(logits, "float32"), axis=-1))
                new_state += tuple(model_state)
                if index == 0:
                    attention = weights
            # (batch, vocab)
            return ops.mean(ops.stack(log_probs), axis=0), new_state, attention

        return step_fn, state, constants, source_mask

    def get_config(self):
        config = super().get_config()
        config["models"] = [keras.saving.serialize_keras_object(model) for model in self.models]
        return config
