"""The recipes' LSTMs qualify for Keras' cuDNN kernel on a GPU.

On the TensorFlow backend `keras.layers.LSTM` runs on cuDNN when a GPU is there and
the layer has the default activations, a bias, no recurrent dropout, `unroll=False`
and `use_cudnn` "auto" or True, and its mask is right-padded; otherwise it falls back
to the generic loop without a word. There is no GPU here, so these tests ask Keras' own
predicates about the layers the recipes build, with the GPU check answered "yes".
"""

import dataclasses

import keras
import numpy as np
import pytest

from recipes import caption, translate
from recipes.data.batching import make_dataset

tensorflow_rnn = pytest.importorskip("keras.src.backend.tensorflow.rnn")
pytestmark = pytest.mark.skipif(
    keras.config.backend() != "tensorflow", reason="cuDNN LSTMs are TensorFlow's (the recipes')"
)


def lstm_layers(layer):
    return [sub for sub in layer._flatten_layers() if isinstance(sub, keras.layers.LSTM)]


def assert_cudnn_qualifies(lstm, monkeypatch):
    monkeypatch.setattr(tensorflow_rnn, "_is_gpu_available", lambda: True)
    cell = lstm.cell
    assert tensorflow_rnn.cudnn_ok(
        cell.activation, cell.recurrent_activation, lstm.unroll, cell.use_bias
    ), lstm.name
    assert cell.recurrent_dropout == 0, lstm.name
    assert lstm.use_cudnn in ("auto", True), lstm.name


def translate_model(**fields):
    config = dataclasses.replace(translate.TranslateConfig(), **fields)
    model = translate.build_model(config, 40, 50)
    model((np.ones((2, 5), "int32"), np.ones((2, 4), "int32")))
    return model


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_translation_fast_path_runs_every_lstm_on_cudnn(dropout, monkeypatch):
    model = translate_model(attention_order="luong", input_feeding=False, dropout=dropout)
    assert model.decoder.uses_fast_path
    layers = lstm_layers(model)
    # the encoder's forward and backward LSTMs and the decoder's
    assert len(layers) == 3
    for lstm in layers:
        assert_cudnn_qualifies(lstm, monkeypatch)


def test_the_captioning_fast_path_runs_its_decoder_lstm_on_cudnn(monkeypatch):
    config = dataclasses.replace(
        caption.CaptionConfig(), attention_order="luong", input_feeding=False, backbone="small_cnn"
    )
    model = caption.build_model(config, caption.make_encoder(config), 30)
    model((np.zeros((2, 32, 32, 3), "float32"), np.ones((2, 4), "int32")))
    assert model.decoder.uses_fast_path
    (lstm,) = lstm_layers(model.decoder)
    assert_cudnn_qualifies(lstm, monkeypatch)


def test_recipe_batches_pad_on_the_right_as_cudnn_masks_need():
    source = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    target = [[3], [4, 5], [6], [7, 8, 9]]
    for (source_batch, target_in), _ in make_dataset(source, target, 4, bucket_boundaries=[]):
        for ids in (source_batch, target_in):
            mask = ids != 0
            assert bool(tensorflow_rnn._is_sequence_right_padded(mask))
    # the predicate does reject a mask with a gap
    assert not bool(tensorflow_rnn._is_sequence_right_padded(np.array([[True, False, True]])))
