"""Training and decoding speed of the seq2seq models, next to this machine's limit.

    python -m benchmarks.speed                      # the stated configuration, float32
    python -m benchmarks.speed --variants float32,bfloat16+jit
    python -m benchmarks.speed --quick              # tiny sizes, a few steps (what the tests run)
    python -m benchmarks.speed --threads 1          # repeatable where sustained load is throttled
    python -m benchmarks.speed --backends jax,torch # our rows on JAX and PyTorch too

Everything runs in one process (but `--backends`), on one fixed configuration
(translation: vocabulary 8000, embedding 256, 256 units, batch 64, source and target
length 20; captioning: a 7x7 grid of 256-channel features, the same decoder, batch 64,
captions of length 16):

- training throughput of `model.fit`, in target tokens (translation) and images
  (captioning) per second, for each attention type on the step path (Bahdanau order,
  the recurrence scanned) and on the fast path (Luong order without input feeding);
- decoding throughput, sentences per second, greedy and beam 5, batched;
- the peak resident memory of each measurement;
- the achieved floating-point rate: the model's matrix-product operations counted
  analytically (`benchmarks.flops`) over the measured time, as a share of the peak
  of a large matrix product measured in the same process (float32 and bfloat16);
- the peers (`benchmarks/peers/`: what a user would write instead, as the Keras,
  TensorFlow and PyTorch tutorials write it), timed the same way after our rows, and
  each of our rows as a multiple of the best peer of its kind (`--peers`);
- with `--backends`, our rows on other Keras backends, each in a new process.

A variant is a precision (`float32`, `bfloat16` = Keras' `mixed_bfloat16`, `float16`)
with an optional `+jit` (XLA, `jit_compile=True`). Results go to
`OUT/speed.md` and `OUT/speed.json`.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import flops  # noqa: E402
from benchmarks.peers import NAMES as PEER_NAMES  # noqa: E402
from benchmarks.peers import repeated_dataset, step_timer  # noqa: E402
from multiattn.attention import NAMES as ATTENTIONS  # noqa: E402

PATHS = ("step", "fast")
BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# XLA's CPU matrix products on one thread (the flag must be set before JAX starts).
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def _xla_flags():
    return os.environ.get("XLA_FLAGS", "")


@dataclasses.dataclass(frozen=True)
class Sizes:
    vocab_size: int = 8000
    embedding_dim: int = 256
    units: int = 256
    batch: int = 64
    source_len: int = 20
    target_len: int = 20
    grid: int = 7
    channels: int = 256
    caption_len: int = 16
    train_steps: int = 20  # timed steps, after compiling and two warm-up steps
    decode_batches: int = 4
    beam_size: int = 5
    matmul_size: int = 2048


QUICK = Sizes(
    vocab_size=60,
    embedding_dim=8,
    units=16,
    batch=4,
    source_len=5,
    target_len=5,
    grid=2,
    channels=16,  # luong-dot needs regions as wide as the decoder
    caption_len=4,
    train_steps=2,
    decode_batches=1,
    beam_size=2,
    matmul_size=64,
)


# -- measuring -------------------------------------------------------------------------------
def reset_peak_memory():
    """Resets the kernel's record of the process' peak resident set (Linux only)."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass


def peak_memory_mib():
    """The peak resident set since the last reset, in MiB (None where unknown)."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def compiled(function):
    """`function` compiled as this Keras backend compiles a step (eager on PyTorch)."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    if backend == "jax":
        import jax

        return jax.jit(function)
    return function


def matmul_peak(size, precision, repeats=10):
    """GFLOP/s of a `size x size` matrix product, the best of `repeats` runs."""
    import keras

    a = keras.random.normal((size, size), dtype=precision, seed=1)
    b = keras.random.normal((size, size), dtype=precision, seed=2)
    # Summed to a float32 scalar: NumPy has no bfloat16 to convert to.
    product = compiled(
        lambda x, y: keras.ops.cast(keras.ops.sum(keras.ops.matmul(x, y)), "float32")
    )
    keras.ops.convert_to_numpy(product(a, b))  # compile, warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        keras.ops.convert_to_numpy(product(a, b))
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def device_name():
    """The device our rows ran on: the first GPU the backend sees, else the CPU."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else f"CPU ({platform.processor() or platform.machine()})"
    if backend == "jax":
        import jax

        return str(jax.devices()[0])
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def set_threads(threads):
    """Limits the Keras backend to `threads` CPU threads; returns the count in effect.

    (The PyTorch peer sets its own pool to the same count. On JAX, `parse` has checked
    that XLA_FLAGS keeps matrix products on one thread, and the process is pinned to
    one CPU, which threads XLA has already started may escape: `--backends jax` pins
    its process from the start.)
    """
    import keras

    backend = keras.config.backend()
    if backend == "torch":
        import torch

        torch.set_num_threads(threads or os.cpu_count())
        return torch.get_num_threads()
    if backend == "jax":
        pin = _one_cpu(threads)
        if pin:
            pin()
        return threads or os.cpu_count()
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as error:  # the runtime already started in this process
            message = "--threads: must be set before TensorFlow starts; run in a new process"
            raise SystemExit(message) from error
    # 0 means TensorFlow's default: one thread per core
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()


# -- models ----------------------------------------------------------------------------------
def model_shape(sizes, task, attention, path):
    luong = path == "fast"
    return flops.ModelShape(
        vocab_size=sizes.vocab_size,
        embedding_dim=sizes.embedding_dim,
        units=sizes.units,
        memory_dim=sizes.units if task == "translate" else sizes.channels,
        attention=attention,
        attention_order="luong" if luong else "bahdanau",
        input_feeding=False,
        use_gate=task == "caption",
        source_vocab_embedding=sizes.embedding_dim if task == "translate" else None,
        encoder_units=sizes.units if task == "translate" else None,
    )


def build_model(sizes, task, attention, path, jit_compile):
    import keras

    from multiattn import AttentionDecoder, BiLSTMEncoder, Seq2Seq

    if task == "translate":
        encoder = BiLSTMEncoder(sizes.vocab_size, sizes.embedding_dim, sizes.units)
    else:  # cached grid features, as the captioning recipe trains on them
        encoder = keras.layers.Identity()
    decoder = AttentionDecoder(
        sizes.vocab_size,
        sizes.embedding_dim,
        sizes.units,
        attention=attention,
        attention_order="luong" if path == "fast" else "bahdanau",
        input_feeding=False,
        use_gate=task == "caption",
    )
    model = Seq2Seq(encoder, decoder, start_id=1, end_id=2)
    model.compile(keras.optimizers.Adam(1e-3, clipnorm=1.0), jit_compile=jit_compile)
    return model


def batch_arrays(sizes, task, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    if task == "translate":
        source = rng.integers(3, sizes.vocab_size, (sizes.batch, sizes.source_len), "int32")
        target_len = sizes.target_len
    else:
        regions = sizes.grid * sizes.grid
        source = rng.normal(size=(sizes.batch, regions, sizes.channels)).astype("float32")
        target_len = sizes.caption_len
    target_in = rng.integers(3, sizes.vocab_size, (sizes.batch, target_len), "int32")
    target_out = rng.integers(3, sizes.vocab_size, (sizes.batch, target_len), "int32")
    return source, target_in, target_out


class Timer:
    """Wall-clock and process CPU seconds of a block (CPU time: every thread's)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exception):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def measure_training(model, sizes, task):
    """`(wall, cpu)` seconds per `model.fit` step over a repeated batch, and compile time."""
    source, target_in, target_out = batch_arrays(sizes, task)
    data = repeated_dataset((source, target_in), target_out)
    with Timer() as compiling:
        model.fit(data, steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
    timer = step_timer()
    steps = sizes.train_steps
    model.fit(data, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return timer.wall / steps, timer.cpu / steps, compiling.wall


def measure_decoding(model, sizes, task, method):
    """Seconds per sentence of `generate`, every hypothesis running the full length."""
    import numpy as np

    batches = [batch_arrays(sizes, task, seed)[0] for seed in range(sizes.decode_batches)]
    source = np.concatenate(batches)
    steps = sizes.target_len if task == "translate" else sizes.caption_len
    from multiattn import BeamSearch, GreedySearch

    # min_length = max_length forbids the end token: every hypothesis runs every step,
    # so the work does not depend on what the untrained model happens to predict.
    if method == "beam":
        search = BeamSearch(beam_size=sizes.beam_size, length_penalty=0.0, min_length=steps)
    else:
        search = GreedySearch(min_length=steps)
    options = {"search": search, "max_length": steps, "batch_size": sizes.batch}
    model.generate(source[: sizes.batch], **options)  # compiles
    with Timer() as timer:
        model.generate(source, **options)
    return timer.wall / len(source), timer.cpu / len(source), steps


def run_variant(sizes, variant, tasks, attentions, paths, log):
    import keras

    precision, _, jit = variant.partition("+")
    keras.config.set_dtype_policy(PRECISIONS[precision])
    # Without "+jit": TensorFlow's graph without XLA; JAX compiles the step with XLA in
    # any case (Keras' "auto": with False it would run eagerly), PyTorch runs eagerly.
    jit_compile = True if jit == "jit" else ("auto" if keras.config.backend() == "jax" else False)
    rows = []
    for task in tasks:
        for path in paths:
            for attention in attentions:
                keras.utils.set_random_seed(0)
                reset_peak_memory()
                model = build_model(sizes, task, attention, path, jit_compile)
                seconds, cpu_seconds, compile_seconds = measure_training(model, sizes, task)
                shape = model_shape(sizes, task, attention, path)
                target_len = sizes.target_len if task == "translate" else sizes.caption_len
                work = flops.training_step(shape, sizes.batch, _source_len(sizes, task), target_len)
                row = {
                    "backend": keras.config.backend(),
                    "variant": variant,
                    "task": task,
                    "path": path,
                    "attention": attention,
                    "train_ms_per_step": round(seconds * 1000, 1),
                    "train_cpu_ms_per_step": round(cpu_seconds * 1000, 1),
                    "compile_seconds": round(compile_seconds, 1),
                    "target_tokens_per_second": round(sizes.batch * target_len / seconds),
                    "images_per_second": (
                        round(sizes.batch / seconds, 1) if task == "caption" else None
                    ),
                    "train_gflops_per_step": round(work / 1e9, 2),
                    "train_gflop_per_second": round(work / seconds / 1e9, 1),
                }
                # Decoding runs the same step whatever the training path: measured once
                # per attention type, on the step-path model.
                if path == paths[0]:
                    for method in ("greedy", "beam"):
                        per_sentence, cpu, steps = measure_decoding(model, sizes, task, method)
                        beam = sizes.beam_size if method == "beam" else 1
                        work = flops.generation(
                            shape, 1, _source_len(sizes, task), steps, beam_size=beam
                        )
                        row[f"{method}_sentences_per_second"] = round(1 / per_sentence, 1)
                        row[f"{method}_cpu_ms_per_sentence"] = round(cpu * 1000, 2)
                        row[f"{method}_gflop_per_second"] = round(work / per_sentence / 1e9, 1)
                row["peak_memory_mib"] = peak_memory_mib()
                log(row)
                rows.append(row)
                keras.backend.clear_session()
    keras.config.set_dtype_policy("float32")
    return rows


def _source_len(sizes, task):
    return sizes.source_len if task == "translate" else sizes.grid * sizes.grid


def _target_len(sizes, task):
    return sizes.target_len if task == "translate" else sizes.caption_len


# -- peers -----------------------------------------------------------------------------------
def run_peers(sizes, names, tasks, threads, log):
    """One row per peer: its training and greedy decoding, timed as our rows are.

    Run after our rows: the peak memory of a row counts the runtimes loaded so far, and
    PyTorch, loaded last, adds its own to its row alone.
    """
    import keras

    from benchmarks import peers

    rows = []
    for peer in peers.PEERS:
        if peer.name not in names or peer.task not in tasks:
            continue
        row = {"peer": peer.name, "kind": peer.kind, "task": peer.task}
        row["description"] = peer.description
        if not peers.available(peer):
            row["status"] = f"not installed ({peer.needs})"
            log(row)
            rows.append(row)
            continue
        keras.utils.set_random_seed(0)
        reset_peak_memory()
        source, target_in, target_out = batch_arrays(sizes, peer.task)
        with Timer() as compiling:
            model = peers.build(peer, sizes, source, target_in, target_out, threads)
            model.train(2)
        with Timer() as timer:
            model.train(sizes.train_steps)
        # A peer training with `fit` times its steps as ours are (`step_timer`); the
        # others' loops are nothing but their steps.
        wall, cpu = getattr(model, "step_seconds", (timer.wall, timer.cpu))
        seconds = wall / sizes.train_steps
        target_len = _target_len(sizes, peer.task)
        row.update(
            status="measured",
            train_ms_per_step=round(seconds * 1000, 1),
            train_cpu_ms_per_step=round(cpu / sizes.train_steps * 1000, 1),
            compile_seconds=round(compiling.wall, 1),
            target_tokens_per_second=round(sizes.batch * target_len / seconds),
            images_per_second=(round(sizes.batch / seconds, 1) if peer.task == "caption" else None),
        )
        batches = [batch_arrays(sizes, peer.task, seed)[0] for seed in range(sizes.decode_batches)]
        model.greedy(batches[0], target_len)  # compiles
        with Timer() as decoding:
            for batch in batches:
                model.greedy(batch, target_len)
        sentences = sizes.batch * len(batches)
        row["greedy_sentences_per_second"] = round(sentences / decoding.wall, 1)
        row["greedy_cpu_ms_per_sentence"] = round(decoding.cpu / sentences * 1000, 2)
        row["peak_memory_mib"] = peak_memory_mib()
        log(row)
        rows.append(row)
        keras.backend.clear_session()
    return rows


def add_ratios(rows, peer_rows):
    """Each of our rows as a multiple of the best measured peer of its kind.

    Training (tokens/s) and peak memory are compared with the fastest-training peer of
    the same task and kind (our step path with step-wise peers, our fast path with
    full-sequence ones; captioning with its step-wise peer whatever the path). Greedy
    and beam decoding are compared with the peer of the task that decodes greedily
    fastest, whatever its kind.
    """
    measured = [peer for peer in peer_rows if peer["status"] == "measured"]
    for row in rows:
        same_task = [peer for peer in measured if peer["task"] == row["task"]]
        kind = "step-wise" if row["path"] == "step" else "full-sequence"
        same_kind = same_task
        if row["task"] == "translate":
            same_kind = [peer for peer in same_task if peer["kind"] == kind]
        if same_kind:
            best = max(same_kind, key=lambda peer: peer["target_tokens_per_second"])
            row["train_peer"] = best["peer"]
            ratio = row["target_tokens_per_second"] / best["target_tokens_per_second"]
            row["train_ratio"] = round(ratio, 2)
            if row["peak_memory_mib"] and best["peak_memory_mib"]:
                row["memory_ratio"] = round(row["peak_memory_mib"] / best["peak_memory_mib"], 2)
        if same_task and "greedy_sentences_per_second" in row:
            best = max(same_task, key=lambda peer: peer["greedy_sentences_per_second"])
            row["decode_peer"] = best["peer"]
            for method in ("greedy", "beam"):
                ours = row[f"{method}_sentences_per_second"]
                row[f"{method}_ratio"] = round(ours / best["greedy_sentences_per_second"], 2)
    return rows


# -- other backends --------------------------------------------------------------------------
def run_backend(backend, args):
    """Our rows on another Keras backend, measured in a new process (one per backend)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "benchmarks.speed", "--peers", "none", "--out", out]
        argv += ["--variants", ",".join(args.variants), "--tasks", ",".join(args.tasks)]
        argv += ["--attentions", ",".join(args.attentions), "--paths", ",".join(args.paths)]
        if args.quick:
            argv.append("--quick")
        if args.train_steps:
            argv += ["--train-steps", str(args.train_steps)]
        environment = dict(os.environ, KERAS_BACKEND=backend)
        if args.threads == 1 and backend == "jax":
            environment["XLA_FLAGS"] = f"{_xla_flags()} {XLA_ONE_THREAD}".strip()
        if args.threads and (backend != "jax" or args.threads == 1):
            argv += ["--threads", str(args.threads)]
        print(f"==> our rows on {backend} (a new process)", flush=True)
        subprocess.run(argv, check=True, env=environment, preexec_fn=_one_cpu(args.threads))
        with open(os.path.join(out, "speed.json")) as file:
            return json.load(file)["rows"]


def _one_cpu(threads):
    """With `--threads 1` on Linux, a function pinning a new process to one CPU.

    XLA keeps helper threads besides its matrix products; pinned, they share that core,
    so JAX's CPU time stays its wall time, as on the other backends.
    """
    if threads != 1 or not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    return lambda: os.sched_setaffinity(0, {cpu})


def add_peaks(rows, peaks):
    """Each row's matrix-product peak: its backend's, at its precision."""
    for row in rows:
        precision = row["variant"].partition("+")[0]
        row["matmul_peak_gflop_per_second"] = peaks[
            "float32" if precision == "float32" else "bfloat16"
        ]
    return rows


# -- reporting -------------------------------------------------------------------------------
def _ratio(row, key):
    return f"{row[key]}×" if key in row else ""


def markdown(report):
    sizes, peaks = report["sizes"], report["matmul_peak_gflop_per_second"]
    lines = [
        "# Speed",
        "",
        f"Machine: {report['machine']}; device: {report.get('device', 'CPU')}; "
        f"{report['threads']} thread(s) used. Command: `{report['command']}`.",
        f"Translation: vocabulary {sizes['vocab_size']}, embedding {sizes['embedding_dim']}, "
        f"{sizes['units']} units, batch {sizes['batch']}, source and target length "
        f"{sizes['source_len']}. Captioning: {sizes['grid']}x{sizes['grid']} grid of "
        f"{sizes['channels']}-channel features, the same decoder, captions of length "
        f"{sizes['caption_len']}. Decoding: beam {sizes['beam_size']}, every hypothesis "
        "runs the full length.",
        "",
        "Matrix-product peak of this machine, measured in the same run "
        f"({sizes['matmul_size']}x{sizes['matmul_size']}): "
        + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in peaks.items())
        + ".",
        "",
        "| backend | variant | task | path | attention | train ms/step | train CPU ms/step "
        "| tokens/s | images/s | train GFLOP/s (% of peak) | greedy sent/s (CPU ms/sent) "
        "| beam sent/s (CPU ms/sent) | peak MiB | × peer: train | × peer: greedy "
        "| × peer: beam | × peer: memory |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        peak = row.get("matmul_peak_gflop_per_second") or peaks["float32"]
        share = 100 * row["train_gflop_per_second"] / peak
        decoding = [
            f"{row[f'{method}_sentences_per_second']} ({row[f'{method}_cpu_ms_per_sentence']})"
            if f"{method}_sentences_per_second" in row
            else ""
            for method in ("greedy", "beam")
        ]
        lines.append(
            f"| {row.get('backend', 'tensorflow')} | {row['variant']} | {row['task']} "
            f"| {row['path']} | {row['attention']} "
            f"| {row['train_ms_per_step']} | {row['train_cpu_ms_per_step']} "
            f"| {row['target_tokens_per_second']} | {row['images_per_second'] or ''} "
            f"| {row['train_gflop_per_second']} ({share:.0f}%) "
            f"| {decoding[0]} | {decoding[1]} | {row['peak_memory_mib']} "
            f"| {_ratio(row, 'train_ratio')} | {_ratio(row, 'greedy_ratio')} "
            f"| {_ratio(row, 'beam_ratio')} | {_ratio(row, 'memory_ratio')} |"
        )
    lines += [
        "",
        "GFLOP/s count matrix products only (`benchmarks/flops.py`); a training step is "
        "three forward passes. The share is of the float32 peak for float32 runs, of the "
        "bfloat16 peak otherwise (each backend's own). Peak MiB is the process' peak "
        "resident memory during that row (the runtime itself included). CPU ms is the "
        "process' CPU time (all threads): on a machine that throttles sustained load, it "
        "compares versions where wall-clock time cannot.",
        "",
        "× peer: our row divided by the best peer of its kind below (training tokens/s and "
        "peak memory: the fastest-training peer of the same task and kind, step-wise for our "
        "step path, full-sequence for our fast path, the captioning peer for captions; "
        "greedy and beam sentences/s: the peer of the task with the fastest greedy "
        "decoding).",
    ]
    if report.get("peers"):
        lines += [
            "",
            "## Peers",
            "",
            "Written as their tutorials write them (`benchmarks/peers/`), float32, on the "
            "same batch, sizes and threads, measured in this run after our rows.",
            "",
            "| peer | kind | task | what it is | train ms/step | train CPU ms/step | tokens/s "
            "| images/s | greedy sent/s (CPU ms/sent) | peak MiB |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for peer in report["peers"]:
            if peer["status"] != "measured":
                lines.append(
                    f"| {peer['peer']} | {peer['kind']} | {peer['task']} "
                    f"| {peer['description']} | {peer['status']} | | | | | |"
                )
                continue
            lines.append(
                f"| {peer['peer']} | {peer['kind']} | {peer['task']} | {peer['description']} "
                f"| {peer['train_ms_per_step']} | {peer['train_cpu_ms_per_step']} "
                f"| {peer['target_tokens_per_second']} | {peer['images_per_second'] or ''} "
                f"| {peer['greedy_sentences_per_second']} ({peer['greedy_cpu_ms_per_sentence']}) "
                f"| {peer['peak_memory_mib']} |"
            )
    return "\n".join(lines) + "\n"


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps")
    parser.add_argument("--variants", default="float32", help="e.g. float32,bfloat16+jit")
    parser.add_argument("--tasks", default="translate,caption")
    parser.add_argument("--attentions", default=",".join(ATTENTIONS))
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--train-steps", type=int, help="timed training steps")
    parser.add_argument(
        "--peers",
        help="the peers to run beside us, or `none` (default: all of them on TensorFlow, "
        "none on other backends): " + ", ".join(PEER_NAMES),
    )
    parser.add_argument(
        "--backends",
        default="",
        help="our rows on these Keras backends too, each in a new process "
        "(e.g. jax,torch); the peers run on TensorFlow",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads per operation and between operations (default: all cores); "
        "1 gives repeatable numbers on a machine that throttles sustained load",
    )
    parser.add_argument("--out", default=os.path.join("runs", "benchmarks", "speed"))
    args = parser.parse_args(argv)
    for name, allowed in (
        ("variants", None),
        ("tasks", ("translate", "caption")),
        ("attentions", ATTENTIONS),
        ("paths", PATHS),
        ("peers", PEER_NAMES),
        ("backends", BACKENDS),
    ):
        if name == "peers" and args.peers is None:
            on_tensorflow = os.environ["KERAS_BACKEND"] == "tensorflow"
            args.peers = ",".join(PEER_NAMES) if on_tensorflow else "none"
        values = [value for value in getattr(args, name).split(",") if value]
        if name == "peers" and values == ["none"]:
            values = []
        for value in values:
            if name == "variants":
                precision, _, jit = value.partition("+")
                ok = precision in PRECISIONS and jit in ("", "jit")
            else:
                ok = value in allowed
            if not ok:
                parser.error(f"--{name}: unknown value {value!r}")
        setattr(args, name, values)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads: must be at least 1")
    if args.threads and os.environ["KERAS_BACKEND"] == "jax":
        if args.threads != 1 or XLA_ONE_THREAD not in _xla_flags():
            parser.error(
                f"--threads: on JAX only 1, with XLA_FLAGS={XLA_ONE_THREAD} set before JAX "
                "starts (--backends jax sets it for its process)"
            )
    return args


def main(argv=None):
    import keras

    args = parse(sys.argv[1:] if argv is None else argv)
    sizes = QUICK if args.quick else Sizes()
    if args.train_steps:
        sizes = dataclasses.replace(sizes, train_steps=args.train_steps)
    backend = keras.config.backend()
    if args.peers and backend != "tensorflow":
        raise SystemExit(
            f"--peers: the peers run on the TensorFlow backend (this is {backend}); "
            "run on TensorFlow with --backends to add our rows on other backends"
        )
    os.makedirs(args.out, exist_ok=True)
    threads = set_threads(args.threads)

    def log(row):
        print(json.dumps(row), flush=True)

    print(f"==> matrix-product peak ({backend})", flush=True)
    peaks = {
        precision: round(matmul_peak(sizes.matmul_size, precision), 1)
        for precision in ("float32", "bfloat16")
    }
    print(f"    {peaks}", flush=True)
    rows = []
    for variant in args.variants:
        print(f"==> {variant} ({backend})", flush=True)
        rows += run_variant(sizes, variant, args.tasks, args.attentions, args.paths, log)
    add_peaks(rows, peaks)
    print("==> peers" if args.peers else "==> peers: none asked for", flush=True)
    peer_rows = run_peers(sizes, args.peers, args.tasks, threads, log)
    for other in args.backends:
        if other != backend:
            rows += run_backend(other, args)
    add_ratios(rows, peer_rows)
    report = {
        "command": "python -m benchmarks.speed " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
        "device": device_name(),
        "threads": threads,
        "sizes": dataclasses.asdict(sizes),
        "matmul_peak_gflop_per_second": peaks,
        "rows": rows,
        "peers": peer_rows,
    }
    json_path = os.path.join(args.out, "speed.json")
    with open(json_path, "w") as file:
        json.dump(report, file, indent=2)
    markdown_path = os.path.join(args.out, "speed.md")
    with open(markdown_path, "w") as file:
        file.write(markdown(report))
    print(f"results: {markdown_path}\n         {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
