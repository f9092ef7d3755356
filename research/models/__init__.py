"""Flax linen models with initialization and activation variants by name.

``build_model(config)`` builds the model called ``config.name``;
``default_config(name)`` gives its config. Training dropout draws from the
``'dropout'`` PRNG stream, MC dropout at evaluation from ``'mc_dropout'``;
every model takes ``(x, train=False, mc_dropout=False)``.
"""

from research.models.activations import (
    ACTIVATIONS,
    activation_names,
    get_activation,
)
from research.models.cnn import CNN, CNN1D, cnn_config, mnist1d_cnn_config
from research.models.initializers import (
    AUTO_INIT,
    INITIALIZERS,
    get_initializer,
    initializer_names,
    resolve_init_name,
)
from research.models.layers import (
    ACTIVATIONS_COLLECTION,
    DROPOUT_STREAM,
    MC_DROPOUT_STREAM,
    AlphaDropout,
    Dropout,
)
from research.models.max_norm import max_norm_groups, max_norm_mask, max_norm_paths
from research.models.mlp import MLP, mlp_config, mnist1d_mlp_config
from research.models.registry import (
    MODELS,
    build_model,
    count_params,
    default_config,
    init_model,
    model_names,
)
from research.models.resnet import (
    RESNET_DEPTHS,
    ResNet,
    WideResNet,
    resnet_config,
    wide_resnet_config,
)
