import collections

import keras
import numpy as np
from keras import ops

from multiattn import search as search_module

RESULT_KEYS = ("tokens", "lengths", "scores", "log_probs", "attention")


class GenerativeModel(keras.Model):
    """A Keras model that decodes with a search: the `generate` of `Seq2Seq` and
    `Seq2SeqEnsemble`.

    Subclasses have `start_id` and `end_id` and implement `search_inputs(source)`, what
    a `multiattn.search.Search` needs to decode one source batch, and
    `build(((None, *source_shape), (None, None)))`. `search` runs the search over
    them; `generate` compiles it per backend and decodes a dataset or array batch by
    batch.
    """

    # How many compiled generate functions (search settings x max_length) are kept.
    generate_cache_size = 32

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # The compiled generate function and the default search objects, in a plain
        # holder: neither Keras nor TensorFlow tracks (or exports) what it holds.
        self._generate_cache = _GenerateCache()

    def search_inputs(self, source):
        """`(step_fn, state, constants, source_mask)` of one source batch, for a search.

        `step_fn(token_ids, state, constants) -> (logits, state, attention)` advances
        every sequence by one token; `state` and `constants` are flat tuples of
        tensors with the batch first; `source_mask` is boolean `(batch, source_len)`
        or `None` (see `multiattn.search`).
        """
        raise NotImplementedError

    def search(self, source, search="greedy", max_length=50, return_attention=True):
        """The search behind `generate`, as a traceable function of one source batch.

        `generate` compiles it; call it yourself inside a `tf.function` (or
        `jax.jit`), e.g. to export a model: there `max_length` may be a scalar int
        tensor. The search object must be made outside the traced function when it
        has variables (`RandomSampling`'s seed).

        Args:
            source: One source batch (a tensor).
            search: A `multiattn.search.Search` object, or `"greedy"`, `"beam"` or
                `"sample"`.
            max_length: Most tokens generated (the end token included).
            return_attention: Whether to keep and return the attention history.

        Returns:
            The result dict of `generate`, with tensors.
        """
        search = self._search_object(search)
        step_fn, state, constants, source_mask = self.search_inputs(source)
        result = search(
            step_fn,
            state,
            constants,
            start_id=self.start_id,
            end_id=self.end_id,
            max_length=max_length,
            source_mask=source_mask,
            return_attention=return_attention,
        )
        return {key: value for key, value in result.items() if value is not None}

    def generate(
        self, source, search="greedy", max_length=50, batch_size=64, return_attention=True
    ):
        """Decodes `source` with a search object: greedy, beam search or sampling.

        The search runs in a generate function of the model's own, compiled per
        search settings and `max_length` (as keras-hub's `CausalLM` does): a
        `tf.function` on TensorFlow (with XLA when the model was compiled with
        `jit_compile=True`), `jax.jit` over the model's variables on JAX, eager
        under `torch.no_grad()` on PyTorch. The model keeps the
        `generate_cache_size` (32) most recently used of them, so a server that pads
        `max_length` and its sources to a few lengths compiles once per length and
        search. `model.predict` stays Keras' own and returns the teacher-forced
        outputs of `call`.

        Args:
            source: Source batch: a NumPy array or a tensor (split into batches of
                `batch_size`), or a `tf.data.Dataset` of source batches (or of
                tuples whose first element is the source batch) with a fixed padded
                length.
            search: A `multiattn.search.Search` object (`GreedySearch()`,
                `BeamSearch(...)`, `RandomSampling(...)`), or `"greedy"`, `"beam"`
                or `"sample"` for one with default settings (the model keeps one
                `"sample"` object, so successive calls draw different samples).
            max_length: Most tokens generated (the end token included).
            batch_size: Sentences decoded at once. A last, smaller batch is padded
                to the size of the first, so it reuses the compiled function.
            return_attention: Whether to return the attention weights; `False`
                spares keeping their history (faster when only the text is wanted).

        Returns:
            A dict of NumPy arrays: `tokens`, `lengths`, `scores`, `log_probs`, and
            `attention` when the decoder attends and `return_attention` is true (see
            `multiattn.search`); beam search adds a `num_return` axis after the batch
            axis.

        Examples:
            >>> import numpy as np
            >>> from multiattn import AttentionDecoder, BeamSearch, BiLSTMEncoder, Seq2Seq
            >>> model = Seq2Seq(
            ...     BiLSTMEncoder(vocab_size=20, embedding_dim=8, units=16),
            ...     AttentionDecoder(vocab_size=20, embedding_dim=8, units=16),
            ... )
            >>> source = np.array([[5, 6, 7, 0], [8, 9, 0, 0], [4, 0, 0, 0]])
            >>> model.generate(source, max_length=5)["tokens"].shape
            (3, 5)
            >>> beam = BeamSearch(beam_size=3, num_return=2)
            >>> result = model.generate(source, search=beam, max_length=5)
            >>> result["tokens"].shape, result["attention"].shape
            ((3, 2, 5), (3, 2, 5, 4))
        """
        search = self._search_object(search)
        max_length = int(max_length)
        if max_length < 1:
            raise ValueError(f"`max_length` must be at least 1, got max_length={max_length}")
        generate_function = None
        outputs, full_size = [], None
        for batch in _source_batches(source, batch_size):
            if not self.built:  # generating before any fit
                self.build(((None, *batch.shape[1:]), (None, None)))
            if generate_function is None:
                generate_function = self.make_generate_function(
                    search, max_length, return_attention
                )
            size = batch.shape[0]
            full_size = full_size or size
            if size < full_size:  # the same shape as the others: no new trace
                batch = np.concatenate([batch, np.repeat(batch[-1:], full_size - size, 0)])
            result = generate_function(batch)
            outputs.append({key: ops.convert_to_numpy(x)[:size] for key, x in result.items()})
        if not outputs:
            raise ValueError("`source` holds no sentence to decode.")
        keys = sorted(outputs[0], key=RESULT_KEYS.index)  # jax.jit returns them sorted
        return {key: np.concatenate([output[key] for output in outputs]) for key in keys}

    def make_generate_function(self, search, max_length, return_attention=True):
        """The compiled function `source batch -> result dict of tensors` of `generate`.

        Built per backend as keras-hub's `CausalLM.make_generate_function` does. The
        model keeps the `generate_cache_size` most recently used functions, one per
        search settings, `max_length`, `return_attention` and the model's
        `jit_compile` / `run_eagerly`; each compiles once per source shape it is
        given (`tf.function` relaxes the shapes after a few).

        Args:
            search: A `multiattn.search.Search` object.
            max_length: Most tokens generated, a Python int.
            return_attention: Whether the function returns the attention weights.

        Returns:
            A function of one source batch.
        """
        backend = keras.config.backend()
        key = (
            search.cache_key(),
            int(max_length),
            bool(return_attention),
            backend,
            self.run_eagerly,
        )
        if backend == "tensorflow":
            key = (*key, bool(self.jit_compile))
        functions = self._generate_cache.functions
        if key in functions:
            functions.move_to_end(key)
            return functions[key]

        def generate_step(source):
            return self.search(source, search, max_length, return_attention)

        function = generate_step
        if backend == "torch":
            import torch

            def function(source):
                with torch.no_grad():
                    return generate_step(source)

        elif backend == "tensorflow" and not self.run_eagerly:
            import tensorflow as tf

            function = tf.function(
                generate_step, jit_compile=bool(self.jit_compile), reduce_retracing=True
            )
        elif backend == "jax" and not self.run_eagerly:
            function = self._jax_generate_function(generate_step, search)
        functions[key] = function
        while len(functions) > max(1, int(self.generate_cache_size)):
            functions.popitem(last=False)  # the least recently used
        return function

    def _jax_generate_function(self, generate_step, search):
        """`generate_step` under `jax.jit`, the model's and the search's state passed in."""
        import itertools

        import jax

        @jax.jit
        def compiled(source, state):
            search_values, trainable_values, non_trainable_values = state
            mapping = itertools.chain(
                zip(search.variables, search_values, strict=True),
                zip(self.trainable_variables, trainable_values, strict=True),
                zip(self.non_trainable_variables, non_trainable_values, strict=True),
            )
            with keras.StatelessScope(state_mapping=mapping) as scope:
                outputs = generate_step(source)
            # The search's new state (the seed it advanced); the model's is unchanged.
            new_values = []
            for variable, value in zip(search.variables, search_values, strict=True):
                new_value = scope.get_current_value(variable)
                new_values.append(value if new_value is None else new_value)
            return outputs, new_values

        def function(source):
            state = (
                [variable.value for variable in search.variables],
                [variable.value for variable in self.trainable_variables],
                [variable.value for variable in self.non_trainable_variables],
            )
            outputs, new_values = compiled(source, state)
            for variable, value in zip(search.variables, new_values, strict=True):
                variable.assign(value)
            return outputs

        return function

    def _search_object(self, search):
        """`search` itself, or for a name the model's object of that name."""
        if isinstance(search, str) and search in search_module.SEARCHES:
            defaults = self._generate_cache.defaults
            if search not in defaults:
                defaults[search] = search_module.get(search)
            return defaults[search]
        return search_module.get(search)


class _GenerateCache:
    """What `generate` keeps between calls."""

    def __init__(self):
        self.functions = collections.OrderedDict()  # key -> compiled function, oldest first
        self.defaults = {}  # search name -> the object used for it


def _source_batches(source, batch_size):
    """The source batches of `generate`, as NumPy arrays."""
    if hasattr(source, "as_numpy_iterator"):  # a tf.data.Dataset (TensorFlow not imported)
        for element in source.as_numpy_iterator():
            yield element[0] if isinstance(element, (tuple, list)) else element
        return
    source = source if isinstance(source, np.ndarray) else ops.convert_to_numpy(source)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got batch_size={batch_size}")
    for start in range(0, len(source), batch_size):
        yield source[start : start + batch_size]
