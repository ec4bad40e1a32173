"""The names the training settings take (models, optimizers, schedules, scalings, activations, bundled
datasets), without importing torch or pandas: the `torchport` command builds its options from them before
it loads anything heavy. The modules that implement them check they agree (tests/test_train.py)."""

MODEL_KINDS = ("linear", "mlp")
OPTIMIZERS = ("exact", "sgd", "adam", "lbfgs")
DEFAULT_LR = {"sgd": 0.002, "adam": 0.001, "lbfgs": 1.0}
SCHEDULES = ("none", "cosine")
SCALES = ("auto", "on", "off")
ACTIVATION_NAMES = ("relu", "tanh", "gelu", "silu")
DATASET_NAMES = ("plant_richness_lr", "plant_richness_mlr", "islands")
TUTORIAL_DATASET = "plant_richness_lr"
# `torchport train` reads a data file this large in chunks for a linear model's exact fit (train/streaming.py)
STREAM_BYTES = 64 << 20
