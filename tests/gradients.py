"""Gradients on whichever Keras backend runs the tests (TensorFlow, JAX or PyTorch).

The library's tests check gradients against NumPy references; this is the one place that
knows how each backend differentiates, so the tests themselves run on all three.
"""

import keras
import numpy as np


def gradients(loss_function, variables=(), inputs=()):
    """The gradient of `loss_function(*inputs)` with respect to `variables` and `inputs`.

    Args:
        loss_function: called with one tensor per entry of `inputs`; returns a scalar. It
            may call layers and models, which read `variables`.
        variables: `keras.Variable`s (e.g. `layer.trainable_variables`).
        inputs: NumPy arrays to differentiate with respect to as well.

    Returns:
        `(variable_gradients, input_gradients)`: lists of float64 NumPy arrays, each of
        its variable's or input's shape. A variable the loss does not depend on gets
        zeros (TensorFlow and PyTorch say None, JAX says zeros: zeros on all three).
    """
    variables, inputs = list(variables), [np.asarray(array) for array in inputs]
    backend = keras.config.backend()
    if backend == "tensorflow":
        found = _tensorflow(loss_function, variables, inputs)
    elif backend == "jax":
        found = _jax(loss_function, variables, inputs)
    elif backend == "torch":
        found = _torch(loss_function, variables, inputs)
    else:
        raise NotImplementedError(f"no gradients for the {backend!r} backend")
    shapes = [tuple(variable.shape) for variable in variables] + [a.shape for a in inputs]
    dense = [
        np.zeros(shape) if gradient is None else np.asarray(gradient, "float64")
        for gradient, shape in zip(found, shapes, strict=True)
    ]
    return dense[: len(variables)], dense[len(variables) :]


def _tensorflow(loss_function, variables, inputs):
    import tensorflow as tf

    tensors = [tf.constant(array) for array in inputs]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        loss = loss_function(*tensors)
    found = tape.gradient(loss, [v.value for v in variables] + tensors)
    # An embedding's gradient comes as IndexedSlices.
    return [None if g is None else tf.convert_to_tensor(g).numpy() for g in found]


def _jax(loss_function, variables, inputs):
    import jax

    def loss_of(values, arrays):
        # The variables read `values` here, so JAX can trace through them.
        mapping = list(zip(variables, values, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return loss_function(*arrays)

    values = [variable.value for variable in variables]
    arrays = [jax.numpy.asarray(array) for array in inputs]
    variable_gradients, input_gradients = jax.grad(loss_of, argnums=(0, 1))(values, arrays)
    return [np.asarray(g) for g in [*variable_gradients, *input_gradients]]


def _torch(loss_function, variables, inputs):
    import torch

    tensors = [torch.tensor(array, requires_grad=True) for array in inputs]
    parameters = [variable.value for variable in variables]
    for parameter in parameters:
        parameter.grad = None
    loss = loss_function(*tensors)
    loss.backward()
    found = [p.grad for p in parameters] + [t.grad for t in tensors]
    return [None if g is None else g.detach().cpu().numpy() for g in found]
