"""A scan over time steps that trains everywhere, including under XLA.

`keras.ops.scan` has two limits on the TensorFlow backend: it keeps only outputs
shaped like the carry, and its `while_loop` has no `maximum_iterations`, so XLA
(`jit_compile=True`) cannot size the stacks that the gradient keeps of every step
("XLA compilation requires a fixed tensor list size"). `scan` here lifts both.
"""

import keras
from keras import ops


def scan(step, carry, sequence):
    """Runs `carry, outputs = step(carry, x)` over the first axis of `sequence`.

    Like `jax.lax.scan`: `outputs` may have any structure (a tuple of tensors), and
    the outputs of every step come back stacked along a new first axis. On
    TensorFlow the loop is a `while_loop` bounded by the sequence length, writing
    each step's outputs into a preallocated buffer with `scatter_update` (which has
    a gradient, unlike `slice_update`), so it differentiates with and without XLA.
    The first step runs before the loop, to learn the shapes of the outputs; the
    sequence must have at least one step. Other backends use `keras.ops.scan`.

    Args:
        step: `(carry, x) -> (carry, outputs)`, with `outputs` a tuple of tensors.
        carry: A tensor or a (nested) tuple of tensors.
        sequence: A tensor `(steps, ...)`, or a tuple of them with the same number of
            steps; `x` is one `(...)` slice of it (a tuple of slices).

    Returns:
        `(carry, outputs)`: the last carry and the tuple of stacked outputs, each
        `(steps, ...)`.

    Examples:
        >>> def step(total, x):
        ...     total = total + x
        ...     return total, (total, x * 2)
        >>> total, (running, doubled) = scan(step, 0.0, keras.ops.arange(1.0, 5.0))
        >>> float(total), keras.ops.convert_to_numpy(running).tolist()
        (10.0, [1.0, 3.0, 6.0, 10.0])
    """
    if keras.backend.backend() != "tensorflow":
        return ops.scan(step, carry, sequence)
    steps = ops.shape(keras.tree.flatten(sequence)[0])[0]

    def at(index):
        return keras.tree.map_structure(lambda tensor: tensor[index], sequence)

    carry, first = step(carry, at(0))
    first = tuple(first)
    buffers = tuple(
        ops.scatter_update(
            ops.zeros((steps, *ops.shape(output)), dtype=output.dtype),
            [[0]],
            ops.expand_dims(output, 0),
        )
        for output in first
    )

    def condition(index, carry, buffers):
        return index < steps

    def body(index, carry, buffers):
        carry, outputs = step(carry, at(index))
        position = ops.reshape(index, (1, 1))
        buffers = tuple(
            ops.scatter_update(buffer, position, ops.expand_dims(output, 0))
            for buffer, output in zip(buffers, outputs, strict=True)
        )
        return index + 1, carry, buffers

    _, carry, buffers = ops.while_loop(
        condition, body, (1, carry, buffers), maximum_iterations=steps - 1
    )
    return carry, buffers
