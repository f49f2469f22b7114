import difflib
import os

import keras
from keras import ops

BACKBONES = ("small_cnn", "mobilenet", "mobilenet_v2", "efficientnet_b0", "resnet50")
_WIDTH_BACKBONES = ("mobilenet", "mobilenet_v2")  # the ones with an `alpha` width multiplier
_DEFAULT_FILTERS = (32, 64, 128)


def _application(backbone):
    """Returns `(model_constructor, preprocess_input)` of a keras.applications backbone."""
    applications = keras.applications
    return {
        "mobilenet": (applications.MobileNet, applications.mobilenet.preprocess_input),
        "mobilenet_v2": (applications.MobileNetV2, applications.mobilenet_v2.preprocess_input),
        "efficientnet_b0": (
            applications.EfficientNetB0,
            applications.efficientnet.preprocess_input,
        ),
        "resnet50": (applications.ResNet50, applications.resnet50.preprocess_input),
    }[backbone]


@keras.saving.register_keras_serializable(package="multiattn")
class ImageGridEncoder(keras.layers.Layer):
    """A CNN's feature map, read as a grid of regions, is an attention memory.

    The backbone maps images `(batch, H_img, W_img, 3)` to a feature map
    `(batch, H, W, C)`, its last one or, with `feature_layer`, that of an earlier
    layer; its `H * W` cells become the regions of the memory, in
    row-major order (region `i * W + j` is cell `(i, j)`), as in "Show, Attend and
    Tell". With `units`, a linear `Dense(units)` projects each region to the size the
    decoder wants; without it the regions keep the `C` backbone channels. There is no
    activation on the projection, so the attention sees the features unsquashed.

    The encoder takes raw RGB pixels as floats in [0, 255] whatever the backbone:
    the backbone's own `preprocess_input` (or a division by 255 for `"small_cnn"`)
    is applied inside the layer. Images must be channels-last. The grid size depends
    on the image size (a stride of 32 for the keras.applications backbones, of
    `2 ** len(filters)` for `"small_cnn"`, less at an earlier `feature_layer`); see
    `grid_shape`.

    Args:
        backbone: One of `"small_cnn"` (a few Conv2D + BatchNorm + ReLU + MaxPool
            blocks trained from scratch), `"mobilenet"`, `"mobilenet_v2"`,
            `"efficientnet_b0"` or `"resnet50"` (keras.applications models without
            their classification top).
        units: Size of the region vectors after a linear projection, or None to
            keep the backbone's channels.
        weights: Initial backbone weights: None (random), `"imagenet"` (downloaded
            by keras.applications, so it needs internet the first time), or the path
            of a weights file for this backbone (e.g. the official Keras
            `mobilenet_2_5_224_tf_no_top.h5` with `backbone="mobilenet"`,
            `alpha=0.25`). They are loaded when the layer is built. A layer re-created
            from its config (`from_config`, hence when loading a `.keras` file)
            keeps this value in its config but does not load it: the `.keras` file
            restores the trained weights itself, so a saved model loads without the
            weights file or internet. After a bare `from_config` the backbone is
            randomly initialised, as every other layer is.
        trainable_backbone: Whether the backbone is fine-tuned. A frozen backbone
            has no trainable weights and runs its BatchNorm layers in inference
            mode. None (the default) freezes pretrained backbones (`weights` given)
            and trains randomly initialised ones, which would be useless frozen.
            Setting `encoder.trainable` later applies to the backbone too, as for
            any Keras layer.
        alpha: Width multiplier of `"mobilenet"` and `"mobilenet_v2"` (None means
            1.0); an error for the other backbones.
        filters: Filters of the convolution blocks of `"small_cnn"` (None means
            `(32, 64, 128)`); an error for the other backbones.
        coordinates: Append each region's row and column (scaled to [-1, 1]) as two
            more channels. A context vector is a weighted sum of regions, so without
            them it says what was attended to but not where it is; with them a
            decoder can tell "left of" from "above".
        fine_tune_from: Name of a backbone layer (e.g. `"conv_dw_12"`, the start of
            MobileNet's last two blocks): it and every later backbone layer are
            fine-tuned, the layers before it stay frozen. BatchNormalization layers
            stay frozen everywhere (inference mode), as Keras' transfer-learning
            guide advises for small fine-tuning sets. The backbone must be a chain
            at that layer: no later layer may read a tensor from before it (true of
            MobileNet everywhere, of residual backbones only between their blocks).
            Cannot be combined with `trainable_backbone`. None: `trainable_backbone`
            decides for the whole backbone.
        feature_layer: Name of the backbone layer whose output is the grid, or None
            for the backbone's last layer. An earlier layer gives a finer grid, as
            Show, Attend and Tell's 14 x 14 regions of VGG's conv5_4: for
            `"mobilenet_v2"` at 224 px, `"block_13_expand_relu"` is 14 x 14 x 576
            (`alpha=1.0`) where the last layer, `"out_relu"`, is 7 x 7 x 1280. The
            backbone is built whole, `weights` loaded into it, then cut after that
            layer: the later layers are neither run, nor trained, nor saved. With
            `fine_tune_from`, that layer must come first (it is then fine-tuned up
            to `feature_layer`).
        from_frozen_features: With `fine_tune_from`, the layer takes what
            `frozen_features(images)` returns (the frozen layers' output) instead of
            images, so those can be computed once and cached while the rest trains.
            Both variants have the same weights: `set_weights` copies one into the
            other.
        **kwargs: Standard layer arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        images: Float tensor `(batch, H_img, W_img, channels)` of raw pixels in
            [0, 255]; `channels` is 3 except for `"small_cnn"`, which takes any.
        training: Whether BatchNorm uses batch statistics (only in a trainable
            backbone) and dropout-like layers are active.

    Returns:
        Regions `(batch, H * W, d)`, with `d = units` or the backbone's channels (plus 2
        with `coordinates`).

    Attributes:
        backbone_model: The backbone network (up to `feature_layer`), a `keras.Model`
            created when the layer is built (with spatial dimensions None, so any
            image size is accepted).
        frozen_part, tuned_part: With `fine_tune_from`, the backbone's layers before
            that layer and from it on, as two `keras.Model`s that share the backbone's
            layers (None without it).

    Examples:
        >>> encoder = ImageGridEncoder("small_cnn", units=16, filters=(8, 16))
        >>> regions = encoder(keras.random.uniform((2, 32, 32, 3), maxval=255.0))
        >>> tuple(regions.shape), encoder.grid_shape((32, 32))
        ((2, 64, 16), (8, 8))
        >>> finer = ImageGridEncoder("small_cnn", filters=(8, 16), feature_layer="relu_1")
        >>> finer.grid_shape((32, 32))  # before the last pooling
        (16, 16)

    Reference:
        Xu et al., "Show, Attend and Tell: Neural Image Caption Generation with
        Visual Attention", ICML 2015 (arXiv:1502.03044).
    """

    def __init__(
        self,
        backbone="small_cnn",
        units=None,
        weights=None,
        trainable_backbone=None,
        alpha=None,
        filters=None,
        coordinates=False,
        fine_tune_from=None,
        from_frozen_features=False,
        feature_layer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(
                f"Unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}"
            )
        if backbone == "small_cnn" and weights == "imagenet":
            raise ValueError(
                "`small_cnn` has no ImageNet weights; use weights=None or a weights file."
            )
        if alpha is not None and backbone not in _WIDTH_BACKBONES:
            raise ValueError(
                f"`alpha` is the width of {' and '.join(_WIDTH_BACKBONES)}; "
                f"backbone {backbone!r} has none (got alpha={alpha})"
            )
        if filters is not None and backbone != "small_cnn":
            raise ValueError(
                f"`filters` configures `small_cnn` only; got filters={filters} with "
                f"backbone {backbone!r}"
            )
        if fine_tune_from is not None and trainable_backbone is not None:
            raise ValueError(
                "`fine_tune_from` trains the backbone from that layer on; it cannot be "
                f"combined with trainable_backbone={trainable_backbone}"
            )
        if fine_tune_from is not None and backbone == "small_cnn":
            raise ValueError("`fine_tune_from` is for pretrained backbones, not `small_cnn`")
        if from_frozen_features and fine_tune_from is None:
            raise ValueError("`from_frozen_features=True` needs `fine_tune_from`")
        if weights not in (None, "imagenet"):
            weights = os.fspath(weights)  # a pathlib.Path would not survive the config
        self.backbone = backbone
        self.units = None if units is None else int(units)
        # `weights` cannot be stored under its own name: `Layer.weights` is the
        # list of variables.
        self.backbone_weights = weights
        self.trainable_backbone = trainable_backbone
        self.alpha = alpha
        self.filters = None if filters is None else tuple(int(f) for f in filters)
        self.coordinates = coordinates
        self.fine_tune_from = fine_tune_from
        self.from_frozen_features = bool(from_frozen_features)
        self.feature_layer = feature_layer
        # Cleared by `from_config`: a re-created layer gets its weights from elsewhere.
        self._load_backbone_weights = True
        self.projection = (
            None
            if self.units is None
            else keras.layers.Dense(self.units, dtype=self.dtype_policy, name="projection")
        )

    @property
    def backbone_is_trainable(self):
        """Whether any backbone weight is trained."""
        if self.fine_tune_from is not None:
            return True
        if self.trainable_backbone is None:
            return self.backbone_weights is None
        return bool(self.trainable_backbone)

    def build(self, images_shape):
        if keras.config.image_data_format() != "channels_last":
            raise ValueError(
                "ImageGridEncoder needs keras.config.image_data_format() == 'channels_last'"
            )
        # Frozen features in: the backbone is still built whole, for RGB images.
        channels = 3 if self.from_frozen_features else images_shape[-1]
        weights = self.backbone_weights if self._load_backbone_weights else None
        if weights not in (None, "imagenet") and not os.path.exists(weights):
            raise ValueError(f"Backbone weights file not found: {weights!r}")
        # Spatial dimensions stay None, so one encoder takes images of any size.
        if self.backbone == "small_cnn":
            backbone = self._small_cnn((None, None, channels))
            if weights is not None:
                backbone.load_weights(weights)
        else:
            if channels != 3:
                raise ValueError(
                    f"Backbone {self.backbone!r} takes RGB images; got {channels} channels"
                )
            model_constructor, _ = _application(self.backbone)
            width = {} if self.alpha is None else {"alpha": self.alpha}
            backbone = model_constructor(
                include_top=False, weights=weights, input_shape=(None, None, 3), **width
            )
        whole_names = [
            layer.name
            for layer in backbone.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]
        if self.feature_layer is not None:
            # Cut after the weights are loaded: a weights file is the whole backbone's.
            backbone = self._cut_backbone(backbone, whole_names)
        # Assigned once: the layer tracks what is assigned, and a whole backbone
        # assigned before the cut would keep (and save) the layers after it.
        self.backbone_model = backbone
        # A layer created after `trainable` was set does not inherit it; do it here.
        self.backbone_model.trainable = self.trainable and self.backbone_is_trainable
        if self.fine_tune_from is not None:
            self._split_backbone(whole_names)
        if self.projection is not None:
            self.projection.trainable = self.trainable
            if not self.projection.built:
                channels = self.backbone_model.output_shape[-1] + (2 if self.coordinates else 0)
                self.projection.build((None, None, channels))
        self.built = True

    def _unknown_layer(self, argument, name, names):
        """The ValueError for a layer name `argument=name` that is not among `names`."""
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
        hint = f"close names: {', '.join(close)}; " if close else ""
        return ValueError(
            f"{argument}={name!r} is not a layer of the {self.backbone!r} backbone; "
            f"{hint}its {len(names)} layers end with {', '.join(names[-4:])}"
        )

    def _cut_backbone(self, whole, names):
        """The backbone `whole` up to `feature_layer`, sharing its layers."""
        if self.feature_layer not in names:
            raise self._unknown_layer("feature_layer", self.feature_layer, names)
        output = whole.get_layer(self.feature_layer).output
        # `inputs[0]`, not `input`: a Sequential (`small_cnn`) has only the former.
        return keras.Model(whole.inputs[0], output, name=whole.name)

    def _split_backbone(self, whole_names):
        names = [layer.name for layer in self.backbone_model.layers]
        if self.fine_tune_from not in names[1:]:
            if self.fine_tune_from in whole_names:
                raise ValueError(
                    f"fine_tune_from={self.fine_tune_from!r} comes after "
                    f"feature_layer={self.feature_layer!r} in the {self.backbone!r} "
                    "backbone; fine-tune from an earlier layer"
                )
            raise self._unknown_layer("fine_tune_from", self.fine_tune_from, whole_names)
        first = names.index(self.fine_tune_from)
        for index, layer in enumerate(self.backbone_model.layers):
            tuned = index >= first and not isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = tuned and self.backbone_model.trainable
        cut = self.backbone_model.layers[first - 1].output
        try:
            tuned_part = keras.Model(cut, self.backbone_model.output)
        except ValueError as error:  # a later layer reads a tensor from before the cut
            raise ValueError(
                f"fine_tune_from={self.fine_tune_from!r}: the {self.backbone!r} backbone "
                "cannot be cut there (a later layer reads a tensor from before it); "
                "choose the first layer of a block"
            ) from error
        frozen_part = keras.Model(self.backbone_model.input, cut)
        # Held outside Keras' tracking: they share the backbone's layers, whose weights
        # `backbone_model` already tracks (and saves) once.
        self._parts = _Untracked(frozen_part, tuned_part)

    @property
    def frozen_part(self):
        parts = getattr(self, "_parts", None)
        return None if parts is None else parts.frozen

    @property
    def tuned_part(self):
        parts = getattr(self, "_parts", None)
        return None if parts is None else parts.tuned

    def frozen_features(self, images):
        """`(batch, h, w, c)`: the frozen backbone layers' output for raw [0, 255] images.

        What a `from_frozen_features=True` twin of this layer takes; they do not
        change in training, so they can be computed once and cached.
        """
        if self.fine_tune_from is None:
            raise ValueError("frozen_features() needs `fine_tune_from`")
        if not self.built:
            self.build(tuple(images.shape))
        images = ops.cast(images, self.compute_dtype)
        return self.frozen_part(self.preprocess(images), training=False)

    def _small_cnn(self, input_shape):
        dtype = self.dtype_policy
        blocks = [keras.Input(shape=input_shape)]
        for index, filters in enumerate(self.filters or _DEFAULT_FILTERS):
            blocks += [
                # No bias: the BatchNorm right after has its own offset.
                keras.layers.Conv2D(
                    filters, 3, padding="same", use_bias=False, dtype=dtype, name=f"conv_{index}"
                ),
                # Momentum 0.9 (not 0.99): inference statistics settle within the few
                # hundred steps a from-scratch CNN gets here.
                keras.layers.BatchNormalization(
                    momentum=0.9, dtype=dtype, name=f"batch_norm_{index}"
                ),
                keras.layers.ReLU(dtype=dtype, name=f"relu_{index}"),
                keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool_{index}"),
            ]
        return keras.Sequential(blocks, name="small_cnn")

    def preprocess(self, images):
        """Maps raw [0, 255] pixels to what the backbone was trained on."""
        if self.backbone == "small_cnn":
            return images / 255.0
        _, preprocess_input = _application(self.backbone)
        return preprocess_input(images)

    def call(self, images, training=None):
        images = ops.cast(images, self.compute_dtype)
        if self.fine_tune_from is not None:
            # BatchNorm stays in inference mode; nothing else in a backbone depends on it.
            if self.from_frozen_features:
                features = self.tuned_part(images, training=False)
            else:
                features = self.backbone_model(self.preprocess(images), training=False)
        else:
            # A frozen backbone also keeps its BatchNorm statistics: inference mode.
            backbone_training = training if self.backbone_model.trainable else False
            features = self.backbone_model(self.preprocess(images), training=backbone_training)
        # features: (batch, H, W, C)
        if self.coordinates:
            features = ops.concatenate([features, self._coordinate_channels(features)], -1)
        batch_size = ops.shape(features)[0]
        regions = ops.reshape(features, (batch_size, -1, features.shape[-1]))  # (batch, H*W, C)
        if self.projection is not None:
            regions = self.projection(regions)  # (batch, H*W, units)
        return regions

    def _coordinate_channels(self, features):
        """`(batch, H, W, 2)`: each cell's row and column, scaled to [-1, 1]."""
        batch_size, height, width = (ops.shape(features)[i] for i in range(3))

        def axis(size):
            positions = ops.cast(ops.arange(size), self.compute_dtype)
            return positions / ops.cast(ops.maximum(size - 1, 1), self.compute_dtype) * 2 - 1

        rows = ops.broadcast_to(ops.expand_dims(axis(height), 1), (height, width))
        columns = ops.broadcast_to(ops.expand_dims(axis(width), 0), (height, width))
        grid = ops.stack([rows, columns], axis=-1)  # (H, W, 2)
        return ops.broadcast_to(ops.expand_dims(grid, 0), (batch_size, height, width, 2))

    def compute_output_shape(self, images_shape):
        if not self.built:
            self.build(images_shape)
        if self.from_frozen_features:
            _, height, width, channels = self.tuned_part.compute_output_shape(tuple(images_shape))
        else:
            _, height, width, channels = self.backbone_model.compute_output_shape(
                tuple(images_shape)
            )
        regions = None if height is None or width is None else height * width
        channels += 2 if self.coordinates else 0
        return (images_shape[0], regions, channels if self.units is None else self.units)

    def grid_shape(self, image_size):
        """Returns the `(H, W)` grid of regions for images of size `(H_img, W_img)`.

        Useful to draw the attention weights over the regions as an image. Builds
        the layer for RGB images if it is not built yet.
        """
        if not self.built:
            self.build((None, None, None, 3))
        channels = self.backbone_model.input_shape[-1]
        _, height, width, _ = self.backbone_model.compute_output_shape((1, *image_size, channels))
        return height, width

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": self.backbone,
                "units": self.units,
                "weights": self.backbone_weights,
                "trainable_backbone": self.trainable_backbone,
                "alpha": self.alpha,
                "filters": self.filters,
                "coordinates": self.coordinates,
                "fine_tune_from": self.fine_tune_from,
                "from_frozen_features": self.from_frozen_features,
                "feature_layer": self.feature_layer,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        layer = cls(**config)
        # The config rebuilds the architecture; the weights come separately (a `.keras`
        # file restores them after building), so the original file or download is
        # not needed and maybe not there.
        layer._load_backbone_weights = False
        return layer


class _Untracked:
    """The two parts of a split backbone, out of sight of Keras' attribute tracking."""

    def __init__(self, frozen, tuned):
        self.frozen, self.tuned = frozen, tuned
