"""The captioning recipe end to end on tiny configurations, and its error messages."""

import contextlib
import io
import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image
from recipe_flags import CAPTION, SCENES

from multiattn.metrics import cider
from recipes import caption, cli

TINY = CAPTION


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("caption") / "run"
    assert caption.main([*SCENES, *TINY, "--out", str(run)]) == 0
    return run


def test_default_command_trains_and_evaluates(trained_run):
    for name in ("model.keras", "config.json", "metrics.json", "vocabulary.txt"):
        assert (trained_run / name).stat().st_size > 0, name
    assert len(list((trained_run / "attention").glob("*.png"))) == 4
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in (
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "cider",
        "exact_match",
        "attention_localization",
        "train_seconds",
    ):
        assert key in metrics, key
    rows = [
        line.split("\t") for line in (trained_run / "test_captions.tsv").read_text().splitlines()
    ]
    assert len(rows) == metrics["images"]
    assert [row[0] for row in rows[:2]] == ["test_0", "test_1"]  # named as the pictures are
    assert all(len(row) == 2 for row in rows)


def write_images(directory, count=3):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = directory / f"image{index}.jpg"
        pixels = np.full((40, 50, 3), (60 * index) % 256, "uint8")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_caption_command_prints_one_line_per_image(trained_run, tmp_path, capsys):
    paths = write_images(tmp_path / "pictures")
    broken = tmp_path / "pictures" / "broken.jpg"
    broken.write_bytes(b"not an image")
    argv = [
        "caption",
        "--run",
        str(trained_run),
        "--attention-png",
        str(tmp_path / "att"),
        *map(str, paths),
        str(broken),
    ]
    assert caption.main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == [str(path) for path in paths]
    assert "broken.jpg" in captured.err
    assert len(list((tmp_path / "att").glob("*.png"))) == 3


def write_flickr(directory):
    paths = write_images(directory / "images", 12)
    lines = [
        f"{path.name}#{n}\ta picture number {i} with grey\n"
        for i, path in enumerate(paths)
        for n in range(2)
    ]
    lines.append("missing.jpg#0\ta caption without an image\n")
    (directory / "captions.token.txt").write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def flickr_run(tmp_path_factory):
    """`(run, stdout)`: a run trained and evaluated on a tiny Flickr8k layout."""
    directory = tmp_path_factory.mktemp("flickr")
    write_flickr(directory / "flickr")
    run = directory / "run"
    argv = ["--data", str(directory / "flickr"), *TINY, "--out", str(run)]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert caption.main(argv) == 0
    return run, out.getvalue()


def test_train_on_flickr8k_layout(flickr_run):
    run, out = flickr_run
    assert "skipped 1 caption record(s): missing image" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert "exact_match" not in metrics and "cider" in metrics
    # The file holds the captions scored, each beside the image it describes.
    rows = [line.split("\t") for line in (run / "test_captions.tsv").read_text().splitlines()]
    assert len(rows) == metrics["images"]
    numbers = [int(pathlib.Path(image).stem.removeprefix("image")) for image, _ in rows]
    references = [[f"a picture number {number} with grey"] * 2 for number in numbers]
    hypotheses = [caption_text for _, caption_text in rows]
    assert cider(hypotheses, references) == pytest.approx(metrics["cider"])


def test_caption_takes_the_beam_and_length_penalty_of_evaluate(
    flickr_run, tmp_path, capsys, monkeypatch
):
    """`caption --beam-size B --length-penalty A` gives the caption `evaluate` gives."""
    run = tmp_path / "run"  # a copy: evaluate rewrites the metrics of the run it scores
    shutil.copytree(flickr_run[0], run)
    penalties = []
    generate_captions = caption.generate_captions

    def recording(model, images, config, beam_size, length_penalty=None, nbest=False):
        penalties.append(config.length_penalty if length_penalty is None else length_penalty)
        return generate_captions(model, images, config, beam_size, length_penalty, nbest)

    monkeypatch.setattr(caption, "generate_captions", recording)
    settings = ["--beam-size", "3", "--length-penalty", "1.5"]
    # The train split: the tiny corpus's largest (10 images).
    assert caption.main(["evaluate", "--run", str(run), "--split", "train", *settings]) == 0
    rows = [line.split("\t") for line in (run / "train_captions.tsv").read_text().splitlines()]
    images = [name for name, _ in rows]  # the image files' paths
    assert len(images) > 1 and all(pathlib.Path(image).is_file() for image in images)
    capsys.readouterr()
    assert caption.main(["caption", "--run", str(run), *settings, *images]) == 0
    printed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert printed == [[image, text] for image, (_, text) in zip(images, rows, strict=True)]
    # Without the flag, the run's stored default (0.0 here), as evaluate's.
    assert caption.main(["caption", "--run", str(run), "--beam-size", "3", images[0]]) == 0
    assert penalties == [1.5, 1.5, 0.0]


FINER_GRID = "conv_pw_11_relu"  # MobileNet's stride-16 grid: 2 x 2 at 32 px, not 1 x 1


@pytest.mark.parametrize(
    "decoder_flags",
    [[], ["--memory-units", "8", "--memory-dropout", "0.2", "--feature-layer", FINER_GRID]],
    ids=["", "embedded-finer-grid"],
)
def test_frozen_pretrained_backbone_caches_features(decoder_flags, tmp_path, capsys):
    import keras

    weights = tmp_path / "mobilenet.weights.h5"
    keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(weights)
    run = tmp_path / "run"
    argv = [
        *SCENES,
        *TINY,
        "--backbone",
        "mobilenet",
        "--alpha",
        "0.25",
        "--weights",
        str(weights),
        *decoder_flags,
        "--out",
        str(run),
    ]
    assert caption.main(argv) == 0
    files = list((run / "features").rglob("*.npy"))
    assert len(files) == 64 + 16
    # The saved model takes images: it reloads and captions without the cache.
    assert caption.main(["evaluate", "--run", str(run)]) == 0
    assert "BLEU-4" in capsys.readouterr().out

    # float16 on disk and in memory, within float16's rounding of the float32 regions.
    config, model, vocabulary = caption.load_run(str(run))
    feature_layer = FINER_GRID if "--feature-layer" in decoder_flags else None
    assert config.feature_layer == model.encoder.feature_layer == feature_layer
    regions, channels = (4, 128) if feature_layer else (1, 256)  # alpha 0.25
    assert np.load(files[0]).dtype == np.float16
    assert np.load(files[0]).shape == (regions, channels + 2)  # and the coordinates
    images = caption.load_splits(config, ("val",))["val"].images
    cached = caption.grid_features(model.encoder, images, run / "features")
    assert len(list((run / "features").rglob("*.npy"))) == len(files)  # all from the cache
    assert cached.dtype == np.float16
    expected = np.asarray(model.encoder(images.astype("float32")))
    np.testing.assert_allclose(cached.astype("float32"), expected, rtol=2**-11, atol=1e-7)

    # A training stopped early leaves the decoder on features as model.keras: refused.
    decoder_only = caption.build_model(config, keras.layers.Identity(), len(vocabulary))
    decoder_only.build(((None, 2, model.decoder.memory_dim), (None, None)))
    decoder_only.save(run / "model.keras")
    assert cli.run_main(caption.main, ["evaluate", "--run", str(run)]) == 2
    assert "holds the decoder of an unfinished training" in capsys.readouterr().err


def test_hard_attention_flags_train_a_hard_model(tmp_path):
    import keras

    run = tmp_path / "run"
    flags = ["--hard-attention", "--reinforce-weight", "0.5", "--entropy-weight", "0.02"]
    assert caption.main(["train", *SCENES, *TINY, *flags, "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["hard_attention"] and config["entropy_weight"] == 0.02
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert model.decoder.attention.hard
    assert (model.reinforce_weight, model.entropy_weight) == (0.5, 0.02)
    assert caption.main(["evaluate", "--run", str(run), "--beam-size", "1"]) == 0


def test_checkpoint_choice_by_val_bleu(tmp_path, capsys):
    """`--monitor val_bleu4`: greedy val captions scored each epoch, the best epoch kept."""
    run = tmp_path / "run"
    argv = ["train", *SCENES, *TINY, "--epochs", "3", "--monitor", "val_bleu4"]
    assert caption.main([*argv, "--patience", "5", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    scores = [
        float(line.split("BLEU-4 ")[1].split(",")[0])
        for line in out.splitlines()
        if "val greedy BLEU-4" in line
    ]
    assert len(scores) == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert "best_val_loss" not in metrics
    assert metrics["best_val_bleu4"] == pytest.approx(max(scores), abs=0.01)
    assert metrics["best_epoch"] == 1 + int(np.argmax(scores))


def test_mirrored_word_ids_swap_left_and_right():
    from recipes.data.word_vocabulary import WordVocabulary

    vocabulary = WordVocabulary.build([["a", "left", "circle", "right"]])
    ids = caption.mirrored_word_ids(vocabulary)
    swapped = vocabulary.decode(ids[vocabulary.encode(["a", "left", "circle", "right"])])
    assert swapped == ["a", "right", "circle", "left"]
    without = WordVocabulary.build([["a", "left"]])
    np.testing.assert_array_equal(caption.mirrored_word_ids(without), np.arange(len(without)))


def test_flip_caches_the_mirror_images_features(tmp_path):
    import keras

    weights = tmp_path / "mobilenet.weights.h5"
    keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(weights)
    flags = [*SCENES, *TINY, "--backbone", "mobilenet", "--alpha", "0.25"]
    run = tmp_path / "run"
    argv = ["train", *flags, "--weights", str(weights), "--flip", "--out", str(run)]
    assert caption.main(argv) == 0
    # 64 train scenes and their mirrors, 16 val scenes (generated scenes are distinct)
    assert len(list((run / "features").rglob("*.npy"))) == 64 * 2 + 16
    assert json.loads((run / "config.json").read_text())["flip"] is True


def test_fine_tune_from_caches_the_frozen_layers_and_trains_the_rest(tmp_path, capsys):
    import keras

    source = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    # Random BatchNorm statistics leave features of 1e-28 after 27 layers, and gradients
    # that Adam's epsilon swallows: set them to one batch's, as pretraining would.
    for layer in source.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    source(np.random.default_rng(0).uniform(-1, 1, (8, 64, 64, 3)), training=True)
    weights = tmp_path / "mobilenet.weights.h5"
    source.save_weights(weights)
    run = tmp_path / "run"
    flags = [*SCENES, *TINY, "--backbone", "mobilenet", "--alpha", "0.25", "--epochs", "2"]
    flags += ["--image-size", "64"]  # a 2x2 grid
    argv = ["train", *flags, "--weights", str(weights), "--fine-tune-from", "conv_dw_12"]
    assert caption.main([*argv, "--learning-rate", "0.05", "--out", str(run)]) == 0
    features = np.load(next((run / "features").rglob("*.npy")))
    assert features.shape[-1] == 128  # conv_pad_12's channels, not the last layer's 256

    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    encoder = model.encoder
    assert encoder.fine_tune_from == "conv_dw_12" and not encoder.from_frozen_features
    for name, trained in (("conv_pw_1", False), ("conv_pw_13", True)):
        kernel = encoder.backbone_model.get_layer(name).kernel
        pretrained = source.get_layer(name).kernel
        assert np.array_equal(kernel.numpy(), pretrained.numpy()) is not trained, name
    assert caption.main(["evaluate", "--run", str(run), "--beam-size", "1"]) == 0
    assert "BLEU-4" in capsys.readouterr().out

    # A training stopped early leaves the model on cached features: refused.
    config, _, vocabulary = caption.load_run(str(run))
    on_features = caption.build_model(
        config, caption.make_encoder(config, from_frozen_features=True), len(vocabulary)
    )
    on_features.build(((None, *features.shape), (None, None)))
    on_features.save(run / "model.keras")
    assert cli.run_main(caption.main, ["evaluate", "--run", str(run)]) == 2
    assert "holds the decoder of an unfinished training" in capsys.readouterr().err


def test_fine_tune_from_needs_pretrained_weights(capsys):
    argv = ["train", *SCENES, *TINY, "--backbone", "mobilenet", "--fine-tune-from", "conv_dw_12"]
    assert cli.run_main(caption.main, argv) == 2
    assert "--fine-tune-from needs pretrained --weights" in capsys.readouterr().err


def test_init_from_starts_from_a_trained_run(tmp_path, capsys):
    import keras

    base = tmp_path / "base"
    assert caption.main(["train", *SCENES, *TINY, "--out", str(base)]) == 0
    run = tmp_path / "run"
    # A learning rate of 1e-12: whatever the model starts from, it ends there.
    argv = ["train", *SCENES, *TINY, "--init-from", str(base), "--learning-rate", "1e-12"]
    assert caption.main([*argv, "--out", str(run)]) == 0
    assert (run / "vocabulary.txt").read_text() == (base / "vocabulary.txt").read_text()
    models = [keras.saving.load_model(r / "model.keras", safe_mode=True) for r in (base, run)]
    started, ended = ([w.numpy() for w in m.trainable_weights] for m in models)
    assert len(started) == len(ended) > 0
    for before, after in zip(started, ended, strict=True):
        np.testing.assert_allclose(after, before, atol=1e-6)
    assert json.loads((run / "config.json").read_text())["init_from"] == str(base)

    capsys.readouterr()
    wider = [*argv, "--units", "24", "--out", str(tmp_path / "wider")]
    assert cli.run_main(caption.main, wider) == 2
    assert "--init-from: the decoder of" in capsys.readouterr().err
    missing = [*argv[:-3], str(tmp_path / "nothing"), "--out", str(tmp_path / "other")]
    assert cli.run_main(caption.main, missing) == 2
    assert "--init-from: no such directory" in capsys.readouterr().err


def test_grid_features_are_computed_again_for_new_pixels(tmp_path, monkeypatch):
    from recipes.data import image_files

    computed = []

    class Encoder:  # what `grid_features` reads of an `ImageGridEncoder`
        backbone, backbone_weights, alpha, coordinates, fine_tune_from = "cnn", None, None, 0, None
        feature_layer = None

        def __call__(self, batch, training=False):
            computed.extend(batch)
            return np.asarray(batch).reshape(len(batch), -1)[:, :4]

    pictures = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype="uint8")
    first = caption.grid_features(Encoder(), pictures, tmp_path)
    np.testing.assert_array_equal(caption.grid_features(Encoder(), pictures, tmp_path), first)
    assert len(computed) == 3  # the second time from the cache
    # Features of pixels from another `load_image` are not reused.
    monkeypatch.setattr(image_files, "PIXELS_VERSION", image_files.PIXELS_VERSION + "-next")
    caption.grid_features(Encoder(), pictures, tmp_path)
    assert len(computed) == 6


def test_an_ensemble_of_runs_evaluates(trained_run, tmp_path, capsys):
    second = tmp_path / "second"  # the same scenes and vocabulary, another decoder
    assert caption.main(["train", *SCENES, *TINY, "--units", "24", "--out", str(second)]) == 0
    before = (trained_run / "metrics.json").read_text()
    runs = ["--run", str(trained_run), "--run", str(second)]
    capsys.readouterr()
    assert caption.main(["evaluate", *runs, "--split", "val", "--beam-size", "2"]) == 0
    assert "on 16 val images" in capsys.readouterr().out
    metrics = json.loads((trained_run / "ensemble" / "metrics.json").read_text())
    assert metrics["ensemble"] == [str(trained_run), str(second)] and "cider" in metrics
    assert len(list((trained_run / "ensemble" / "attention").glob("*.png"))) == 4
    assert (trained_run / "metrics.json").read_text() == before  # the run's own stay


def test_an_ensemble_needs_the_same_vocabulary(trained_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert caption.main(["train", *SCENES, *TINY, "--min-count", "1000", "--out", str(other)]) == 0
    capsys.readouterr()
    runs = ["--run", str(trained_run), "--run", str(other)]
    assert cli.run_main(caption.main, ["evaluate", *runs]) == 2
    error = capsys.readouterr().err
    assert f"--run {other}: its vocabulary differs" in error
    assert len(error.splitlines()) == 1


def test_model_flags_reach_the_model():
    import keras

    config = caption.CaptionConfig(
        label_smoothing=0.1,
        attention_penalty=0.5,
        tie_embeddings=True,
        memory_units=24,
        memory_dropout=0.4,
        layers=2,
    )
    model = caption.build_model(config, keras.layers.Identity(), 20, compile_model=False)
    assert (model.decoder.memory_units, model.decoder.memory_dropout) == (24, 0.4)
    assert model.decoder.num_layers == 2
    assert model.cross_entropy.label_smoothing == 0.1
    assert model.attention_penalty == 0.5
    assert model.decoder.tie_embeddings and model.decoder.output_dense is None
    assert model.decoder.input_feeding and not model.decoder.uses_fast_path
    args = caption.parse(["train", "--data", "d", "--no-input-feeding"])
    config = cli.config_from_args(caption.CaptionConfig, args)
    model = caption.build_model(config, keras.layers.Identity(), 20, compile_model=False)
    assert not model.decoder.input_feeding and model.decoder.uses_fast_path


def test_average_last_is_judged_by_the_monitored_score(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--epochs", "2", "--average-last", "2", "--monitor", "val_cider"]
    assert caption.main(["train", *SCENES, *TINY, *flags, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "the average: val greedy BLEU-4" in out and "val_cider of the average" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert "average_last_val_cider" in metrics
    assert caption.main(["evaluate", "--run", str(run)]) == 0  # the saved model captions


SELF_CRITICAL = ["--monitor", "val_cider", "--self-critical-batch-size", "8"]


def test_self_critical_training_keeps_the_best_and_resumes(tmp_path, capsys):
    """Cross-entropy, then self-critical epochs judged by val CIDEr-D; a rerun with more
    self-critical epochs goes on from the record, without training again from scratch."""
    run = tmp_path / "run"
    argv = ["train", *SCENES, *TINY, *SELF_CRITICAL, "--out", str(run)]
    assert caption.main([*argv, "--self-critical-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "self-critical training: 1 epochs, 5 samples of each of 8 sources per step" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training_finished"] and metrics["self_critical_epochs_completed"] == 1
    scores = [
        float(line.rsplit("CIDEr-D ", 1)[1])
        for line in out.splitlines()
        if "val greedy BLEU-4" in line
    ]
    assert len(scores) == 2  # the cross-entropy epoch, the self-critical one
    assert metrics["best_val_cider"] == pytest.approx(max(scores), abs=1e-3)
    assert ("self_critical_best_epoch" in metrics) == (scores[1] > scores[0])
    assert np.isfinite(metrics["self_critical"][0]["reward"])

    assert caption.main([*argv, "--self-critical-epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "cross-entropy training finished earlier" in out
    assert "Self-critical epoch 2/2" in out and "Self-critical epoch 1/2" not in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["self_critical_epochs_completed"] == 2 and len(metrics["self_critical"]) == 2
    assert caption.main(["evaluate", "--run", str(run), "--beam-size", "1"]) == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--self-critical-epochs", "1"],
            "choose the model by a score of its outputs with --monitor",
        ),
        (
            [*SELF_CRITICAL, "--self-critical-epochs", "1", "--self-critical-samples", "1"],
            "--self-critical-samples 1: must be 2 or more",
        ),
        (
            [*SELF_CRITICAL, "--self-critical-epochs", "1", "--self-critical-learning-rate", "0"],
            "--self-critical-learning-rate 0.0: must be positive",
        ),
        (
            [*SELF_CRITICAL, "--self-critical-epochs", "1", "--self-critical-temperature", "-1"],
            "--self-critical-temperature -1.0: must be positive",
        ),
        (
            [*SELF_CRITICAL, "--self-critical-epochs", "1", "--self-critical-time-budget", "-1"],
            "--self-critical-time-budget -1.0: must be 0 (none) or more minutes",
        ),
        (["--layers", "0"], "--layers 0: must be 1 or more"),
        (["--memory-units", "0"], "--memory-units 0: must be 1 or more"),
        (["--memory-dropout", "1"], "--memory-dropout 1.0: must be in [0, 1)"),
        (
            ["--feature-layer", "relu_9"],
            "--feature-layer 'relu_9' is not a layer of the 'small_cnn' backbone; close names: "
            "relu_2, relu_1, relu_0; its 12 layers end with",
        ),
        (
            [
                *("--backbone", "mobilenet", "--alpha", "0.25", "--weights", "w.weights.h5"),
                *("--feature-layer", FINER_GRID, "--fine-tune-from", "conv_dw_12"),
            ],
            "--fine-tune-from 'conv_dw_12' comes after --feature-layer 'conv_pw_11_relu'",
        ),
    ],
)
def test_bad_flags_are_checked_first(flags, message, tmp_path, capsys):
    argv = ["train", *SCENES, *TINY, *flags, "--out", str(tmp_path / "run")]
    assert cli.run_main(caption.main, argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_sampled_targets_teacher_force_the_samples():
    from recipes.self_critical import sampled_targets

    tokens = np.array([[5, 6, 2, 0], [7, 8, 9, 3]])  # ended at 2 (END_ID); never ended
    target_in, target_out = sampled_targets(tokens)
    np.testing.assert_array_equal(target_in, [[1, 5, 6, 0], [1, 7, 8, 9]])
    np.testing.assert_array_equal(target_out, tokens)
