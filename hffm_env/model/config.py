"""Configuration of the modular M3T foundation model."""

from __future__ import annotations

from dataclasses import dataclass

from hffm_env._validation import MAX_COUNT, MAX_FACTOR, MAX_SEED, ConfigError, check_choice, check_int, check_real

BACKBONE_DTYPES = ("float32", "bfloat16")
MAX_WIDTH = 65536  # hidden, bottleneck and sequence sizes: beyond any released transformer's
MAX_LAYERS = 1024

# The architecture of the backbone shipped in hffm_env/assets (training/pretrain_backbone.py).
SHIPPED_ARCHITECTURE = {
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "intermediate_size": 256,
    "image_size": 32,
    "patch_size": 8,
    "max_text_tokens": 12,
    "vocab_size": 256,
    "sensor_length": 64,
    "sensor_patch": 8,
}


@dataclass(frozen=True)
class ModelConfig:
    """A frozen ViLT-style backbone and the trainable module kinds around it.

    ``backbone``: ``"default"`` loads the small backbone pretrained by
    ``training/pretrain_backbone.py`` and shipped with the package (its architecture
    is ``SHIPPED_ARCHITECTURE``, which the fields below must then match, but for
    ``num_layers``, which may be fewer: the backbone then keeps its first
    ``num_layers`` layers, at that fraction of the compute);
    ``"random"`` builds the architecture below with freshly initialised weights from
    ``init_seed``; any other string is a local directory (``config.json`` + weights,
    as ``ViltModel.save_pretrained`` writes it, e.g. a copy of ViLT-B/32) — nothing is
    ever downloaded (there too ``num_layers`` may keep only the first layers). Adapters are double adapters (two parallel
    bottleneck adapters of ``adapter_bottleneck`` after every layer's output; 256 in
    the paper). The sensor signal is cut into patches of ``sensor_patch`` samples,
    each embedded by the trainable sensor encoder. ``n_prompts`` learnable prompt
    tokens join every input. A mixture-of-experts layer of ``n_experts`` bottleneck
    experts with a gate that routes every token to its ``experts_top_k`` best experts
    sits after the last layer; a device may train only some experts. The modules train
    by AdamW with ``learning_rate`` in (0, 1] and ``learning_rate·weight_decay <= 1``.
    ``backbone_dtype`` is the dtype of the frozen layers' matmuls: ``"bfloat16"`` runs
    them at half the memory traffic and, on CPUs with bf16 units (AVX512-BF16, AMX),
    2-3x faster (an env step 1.1-1.6x); the residual stream, layer norms, softmax, every trainable module
    and the optimiser stay float32 (mixed-precision fine-tuning of a frozen model).
    On a CPU without bf16 units it is slower than ``"float32"``.
    """

    backbone: str = "default"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 256
    image_size: int = 32
    patch_size: int = 8
    max_text_tokens: int = 12
    vocab_size: int = 256
    sensor_length: int = 64
    sensor_patch: int = 8
    adapter_bottleneck: int = 16
    n_prompts: int = 4
    n_experts: int = 4
    expert_bottleneck: int = 16
    experts_top_k: int = 2
    init_seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    backbone_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_choice("backbone_dtype", self.backbone_dtype, BACKBONE_DTYPES)
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"backbone must be 'default', 'random' or a local directory, got {self.backbone!r}")
        if self.backbone == "default":
            for name, value in SHIPPED_ARCHITECTURE.items():
                if name == "num_layers":
                    check_int(f"num_layers (the shipped backbone has {value})", self.num_layers, low=1, high=value)
                elif getattr(self, name) != value:
                    raise ConfigError(
                        f"{name} must be {value} with backbone='default' (the shipped backbone's "
                        f"architecture), got {getattr(self, name)!r}; use backbone='random' for "
                        "another architecture"
                    )
        check_int("hidden_size", self.hidden_size, low=8, high=MAX_WIDTH)
        check_int("num_layers", self.num_layers, low=1, high=MAX_LAYERS)
        check_int("num_heads (at most hidden_size)", self.num_heads, low=1, high=self.hidden_size)
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size must be a multiple of num_heads={self.num_heads}, got {self.hidden_size}")
        check_int("intermediate_size", self.intermediate_size, low=1, high=16 * MAX_WIDTH)
        check_int("image_size", self.image_size, low=8, high=MAX_WIDTH)
        check_int("patch_size", self.patch_size, low=1, high=self.image_size)
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size must be a multiple of patch_size={self.patch_size}, got {self.image_size}")
        check_int("max_text_tokens", self.max_text_tokens, low=2, high=MAX_WIDTH)
        check_int("vocab_size", self.vocab_size, low=8, high=MAX_COUNT)
        check_int("sensor_length", self.sensor_length, low=1, high=MAX_COUNT)
        check_int("sensor_patch", self.sensor_patch, low=1, high=self.sensor_length)
        if self.sensor_length % self.sensor_patch:
            raise ConfigError(
                f"sensor_length must be a multiple of sensor_patch={self.sensor_patch}, got {self.sensor_length}"
            )
        check_int("adapter_bottleneck", self.adapter_bottleneck, low=1, high=MAX_WIDTH)
        check_int("n_prompts", self.n_prompts, low=0, high=MAX_WIDTH)
        check_int("n_experts", self.n_experts, low=1, high=MAX_LAYERS)
        check_int("expert_bottleneck", self.expert_bottleneck, low=1, high=MAX_WIDTH)
        check_int(f"experts_top_k (at most n_experts={self.n_experts})", self.experts_top_k, low=1, high=self.n_experts)
        check_int("init_seed", self.init_seed, low=0, high=MAX_SEED)
        # AdamW moves a weight by about the learning rate per step: above 1 the modules
        # blow up to inf/NaN within a few rounds
        check_real("learning_rate", self.learning_rate, low=0.0, high=1.0, low_inclusive=False)
        check_real("weight_decay", self.weight_decay, low=0.0, high=MAX_FACTOR)
        if self.learning_rate * self.weight_decay > 1.0:
            raise ConfigError(
                f"weight_decay must be at most 1/learning_rate={1.0 / self.learning_rate:g} "
                "(AdamW scales weights by 1 - learning_rate·weight_decay each step), "
                f"got {self.weight_decay!r}"
            )

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def n_sensor_tokens(self) -> int:
        return self.sensor_length // self.sensor_patch
