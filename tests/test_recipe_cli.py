"""What both recipes share: one-line errors, flags from the config dataclass."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import caption, cli, translate

RECIPES = [translate, caption]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: recipe.__name__)
@pytest.mark.parametrize(
    "argv,message",
    [
        (["evaluate", "--run", "{tmp}/nowhere"], "no such directory"),
        (["evaluate", "--run", "{tmp}"], "holds no model.keras"),
        (["train", "--data", "{tmp}/missing.tsv", "--out", "{tmp}/run"], "missing.tsv"),
        (["train", "--learning-rate-decay", "0", "--out", "{tmp}/run"], "must be in (0, 1]"),
        (["train", "--learning-rate-decay", "1.5", "--out", "{tmp}/run"], "must be in (0, 1]"),
        (["train", "--ema-decay", "1", "--out", "{tmp}/run"], "must be in [0, 1)"),
        (["train", "--average-last", "1", "--out", "{tmp}/run"], "0 (none) or 2 or more"),
        (["train", "--time-budget", "-1", "--out", "{tmp}/run"], "0 (none) or more minutes"),
    ],
)
def test_clear_one_line_errors(recipe, argv, message, tmp_path, capsys):
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    assert cli.run_main(recipe.main, argv) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error and len(error.splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "recipe,config_class",
    [(translate, translate.TranslateConfig), (caption, caption.CaptionConfig)],
)
def test_flags_override_only_what_is_given(recipe, config_class):
    args = recipe.parse(
        [
            "train",
            "--attention",
            "luong-dot",
            "--learning-rate",
            "0.01",
            "--no-fine-tune" if recipe is caption else "--no-input-feeding",
        ]
    )
    config = cli.config_from_args(config_class, args)
    assert (config.attention, config.learning_rate) == ("luong-dot", 0.01)
    assert config.units == config_class().units
    assert recipe.parse(["--epochs", "3"]).command == "all"


def test_config_round_trips_through_json(tmp_path):
    config = translate.TranslateConfig(data="x.tsv", units=7)
    cli.save_config(config, tmp_path / "config.json")
    assert cli.load_config(translate.TranslateConfig, tmp_path / "config.json") == config


@pytest.mark.slow
@pytest.mark.parametrize("module", ["recipes.translate", "recipes.caption"])
def test_recipes_refuse_other_backends_in_one_line(module, tmp_path):
    """Under KERAS_BACKEND=jax a recipe stops before it reads or writes anything."""
    environment = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run(
        [sys.executable, "-m", module, "train", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the recipes run on Keras' TensorFlow backend"), done.stderr
    assert "'jax'" in error and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
