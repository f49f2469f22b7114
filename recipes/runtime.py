"""Where a recipe trains: one device or many, mixed precision, XLA.

Both recipes' `train` calls, in this order:

    strategy, run = runtime.start_training(config, run)  # before any TF op
    ...  # datasets through `shard_by_data` (and `pad_for_xla` with --jit-compile)
    with strategy.scope():
        model = build_model(...)  # compiled with jit_compile=config.jit_compile
    with runtime.fitting(model, strategy):
        model.fit(...)

`evaluate` and the search commands call `apply_to_loaded_model` on the model they load,
so they decode with the precision and XLA setting the run trained with.
"""

import contextlib
import dataclasses
import json
import os

from recipes import cli

STRATEGIES = ("default", "mirrored", "multi-worker")
PRECISIONS = ("none", "bfloat16", "float16")
# Variables stay float32 and layers compute in the half type; for float16, Keras wraps the
# optimizer in a `LossScaleOptimizer` at `compile` (its range is too narrow for gradients).
POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
DEFAULT_CPU_DEVICES = 2


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a run trains: the part of both recipes' configs that is theirs alike.

    Saved with the run: `evaluate`, the search commands and `export` apply its precision
    and XLA setting. `--batch-size` is global, split among the replicas.
    """

    strategy: str = dataclasses.field(default="default", metadata={"choices": STRATEGIES})
    devices: int = dataclasses.field(
        default=0,
        metadata={"help": "mirrored: GPUs to use (0: all); without a GPU, CPU devices (0: 2)"},
    )
    mixed_precision: str = dataclasses.field(default="none", metadata={"choices": PRECISIONS})
    jit_compile: bool = False


def start_training(config, run):
    """What a training does first, before any TensorFlow op: its strategy and precision.

    Returns `(strategy, directory)`: the directory this process writes, `run` on the
    chief (see `worker_directory`).
    """
    strategy = make_strategy(config.strategy, config.devices)
    set_precision(config.mixed_precision)
    return strategy, worker_directory(run, strategy)


def make_strategy(name, devices=0):
    """The `tf.distribute` strategy called `name` (one of `STRATEGIES`).

    - `default`: the current device, no distribution.
    - `mirrored`: synchronous data parallelism over `devices` local GPUs (0: all of them);
      on a machine without a GPU the CPU is split into `devices` logical devices (0: 2),
      which must happen before TensorFlow starts: call this before any other TF op.
    - `multi-worker`: `MultiWorkerMirroredStrategy` over the machines that the
      `TF_CONFIG` environment variable lists; it too must be created first.

    A process makes each strategy once and reuses it: two mirrored strategies in one
    process would share collective keys and mix up their all-reduces.
    """
    if name not in STRATEGIES:
        raise cli.UsageError(f"--strategy {name}: not one of {', '.join(STRATEGIES)}")
    if devices < 0:
        raise cli.UsageError(f"--devices {devices}: must be 0 (all) or more")
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi-worker":
        if task_of_tf_config() is None:
            raise cli.UsageError(
                "--strategy multi-worker needs TF_CONFIG, e.g. "
                '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}\''
            )
        key = (name,)
        make = tf.distribute.MultiWorkerMirroredStrategy
    else:
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            if devices > len(gpus):
                raise cli.UsageError(f"--devices {devices}: this machine has {len(gpus)} GPU(s)")
            key = tuple(f"/gpu:{index}" for index in range(devices or len(gpus)))
        else:
            count = devices or DEFAULT_CPU_DEVICES
            split_cpu(count)
            key = tuple(f"/cpu:{index}" for index in range(count))

        def make():
            return tf.distribute.MirroredStrategy(list(key))

    if key not in _strategies:
        _strategies[key] = make()
    return _strategies[key]


_strategies = {}


def split_cpu(count):
    """Splits the first CPU into `count` logical devices (before TensorFlow starts)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:  # TensorFlow has already started with its devices fixed
        started = len(tf.config.list_logical_devices("CPU"))
        raise cli.UsageError(
            f"--strategy mirrored --devices {count}: TensorFlow already started with "
            f"{started} CPU device(s); split the CPU in a new process, before any "
            "TensorFlow op"
        ) from None


def task_of_tf_config():
    """`(task_type, task_index)` from `TF_CONFIG`, or `None` without it.

    A `TF_CONFIG` that is not the JSON TensorFlow expects is a one-line error, not a
    traceback from deep inside the cluster resolver.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise cli.UsageError(f"TF_CONFIG: not JSON ({error})") from None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise cli.UsageError('TF_CONFIG: needs a "cluster" and a "task" object')
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster or not isinstance(index, int):
        raise cli.UsageError(
            f"TF_CONFIG: task {task!r} names no entry of the cluster ({', '.join(cluster)})"
        )
    if not 0 <= index < len(cluster[task_type]):
        raise cli.UsageError(
            f"TF_CONFIG: task index {index} is out of range: the cluster has "
            f"{len(cluster[task_type])} {task_type}(s)"
        )
    return task_type, index


def is_chief(task_type, task_index):
    """The worker that writes the run: the `chief`, or worker 0 when there is none."""
    return task_type in (None, "chief") or (task_type == "worker" and task_index == 0)


def worker_directory(run, strategy):
    """Where this process writes: `run` on the chief (or without multi-worker training).

    Every worker saves checkpoints and backups, as the TF multi-worker guide has them do,
    but only the chief into the run directory; the others write into their own
    `run/workers/<type>-<index>/`. It is kept, not deleted: an interrupted run resumes
    on every worker from that worker's own backup, so all of them restart at the same
    epoch (a worker starting over would wait forever for the others).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_index = getattr(resolver, "task_id", None)
    if is_chief(task_type, task_index):
        return run
    path = os.path.join(run, "workers", f"{task_type}-{task_index}")
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def fitting(model, strategy):
    """The context to call `model.fit` in: the strategy's scope, and fixes for Keras.

    Keras 3.15's `fit` fails under `tf.distribute` in two ways (keras-team/keras#20585):

    - it first averages one input batch over the replicas to build the model
      symbolically, which fails when a batch splits unevenly ("Inputs to operation AddN
      ... must have the same size": 11 sentences on 2 replicas) and, with more than
      one worker, on any nested batch ("Attempt to convert a value (PerReplica...) to
      a Tensor"). The model and its optimizer are built here instead, and the model
      takes its strategy from the scope `fit` runs in rather than from the one it was
      made in, which skips that step;
    - with more than one worker it averages each step's metrics along axis 0, which a
      scalar does not have ("Invalid reduction dimension 0"). The steps return them
      as one-element vectors, whose mean over the workers is the scalar again.
    """
    import tensorflow as tf

    with strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        made_in = model._distribute_strategy
        model._distribute_strategy = None
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if multi_worker:
            for name in ("train_step", "test_step"):
                setattr(model, name, _with_vector_outputs(getattr(model, name)))
        try:
            yield
        finally:
            model._distribute_strategy = made_in
            if multi_worker:
                del model.train_step, model.test_step  # the class's methods again
                model.train_function = model.test_function = None  # built with the wrappers


def _with_vector_outputs(step):
    from keras import ops, tree

    def step_with_vector_outputs(data):
        return tree.map_structure(lambda value: ops.reshape(value, (1,)), step(data))

    return step_with_vector_outputs


def on_chief_only(evaluate):
    """`evaluate` after training (the default `all` command), run by the chief alone.

    The other workers of a multi-worker run hold no run directory of their own (on
    separate disks there is none to read; on a shared one they would race the chief).
    """

    def evaluate_on_chief(run, *args, **kwargs):
        task = task_of_tf_config()
        if task is not None and not is_chief(*task):
            cli.stage(f"{task[0]} {task[1]}: the chief evaluates the run")
            return {}
        return evaluate(run, *args, **kwargs)

    return evaluate_on_chief


def shard_by_data(dataset):
    """`dataset` split among workers by element, not by file.

    The recipes' datasets are built in memory, from no files: TensorFlow's automatic
    sharding would try files first, fail, and warn before falling back to this.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def pad_for_xla(dataset, batch_size, minimum=8):
    """Pads each batch of `((source, target_in), target_out)` to a few fixed shapes.

    XLA compiles one program per input shape: batches bucketed by length, each padded
    to its own longest sentence and the last of each bucket short, would compile dozens
    of them (minutes each for a big model). Here lengths are padded to powers of two
    (at least `minimum`) and batches to `batch_size` rows, which leaves a handful. The
    padding is 0, which the loss, the accuracy and the attention all mask; only the
    epoch's mean loss in the log weighs a short batch as a full one. (Not for captions:
    rows of zeros would count in the doubly stochastic penalty's mean over the batch.)
    """
    import tensorflow as tf

    def pad(ids):
        rows, length = tf.shape(ids)[0], tf.shape(ids)[1]
        power = tf.math.ceil(tf.math.log(tf.cast(length, "float32")) / tf.math.log(2.0))
        padded_length = tf.maximum(tf.maximum(tf.cast(2.0**power, "int32"), length), minimum)
        padded = tf.pad(ids, [[0, batch_size - rows], [0, padded_length - length]])
        # A static batch size: XLA cannot differentiate some loops over an unknown one.
        return tf.ensure_shape(padded, [batch_size, None])

    def pad_batch(inputs, target_out):
        source, target_in = inputs
        return (pad(source), pad(target_in)), pad(target_out)

    return dataset.map(pad_batch, num_parallel_calls=tf.data.AUTOTUNE)


def set_precision(precision):
    """Sets the global Keras dtype policy for `--mixed-precision` (`PRECISIONS`).

    Layers built afterwards compute in bfloat16 or float16 with float32 variables;
    attention softmax and masking stay in float32 inside the library.
    """
    import keras

    if precision not in POLICIES:
        raise cli.UsageError(f"--mixed-precision {precision}: not one of {', '.join(PRECISIONS)}")
    keras.config.set_dtype_policy(POLICIES[precision])


def describe(strategy, config):
    """For the log: the strategy and its replicas, precision, XLA."""
    parts = [f"{config.strategy} strategy, {strategy.num_replicas_in_sync} replica(s)"]
    if config.mixed_precision != "none":
        parts.append(f"mixed {config.mixed_precision}")
    if config.jit_compile:
        parts.append("XLA")
    return ", ".join(parts)


def ensemble(models, config):
    """The loaded runs' models decoding as one, in the first run's precision and XLA."""
    from multiattn import Seq2SeqEnsemble

    model = Seq2SeqEnsemble(models)
    apply_to_loaded_model(model, config)
    return model


def apply_to_loaded_model(model, config):
    """Applies a run's `--mixed-precision` and `--jit-compile` to the model loaded from it.

    The layers keep the dtype policy they were saved with; the global policy is set too,
    so anything built later matches. `jit_compile` compiles the generate function (greedy
    and beam search) with XLA; it is set from the run's config because a model
    saved uncompiled (captioning with a frozen backbone) keeps no compile settings.
    """
    set_precision(config.mixed_precision)
    model.jit_compile = config.jit_compile
    return model
