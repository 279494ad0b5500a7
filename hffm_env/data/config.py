"""Configuration of the data layer: task suite, sizes, heterogeneity."""

from __future__ import annotations

from dataclasses import dataclass

from hffm_env._validation import MAX_COUNT, MAX_FACTOR, ConfigError, check_choice, check_int, check_real
from hffm_env.data.registry import MODALITIES

EVAL_SPLITS = ("global", "local")
EVAL_SHARES = ("stratified", "random")


@dataclass(frozen=True)
class DataConfig:
    """What data the devices hold.

    ``tasks``: registered task names in the suite. ``pool_size``: samples generated per
    task and split over the devices holding it (Dirichlet(``dirichlet_alpha``) over
    devices, per class, as the reference does). ``eval_split`` says what a device is
    scored on: ``"global"`` (default, the reference's protocol) sets ``test_fraction``
    of each task's pool aside *before* the split and shares it out over the
    task's holders, so every device is tested on the task's global distribution;
    ``eval_shares`` says how it is shared out: ``"stratified"`` (default) deals a
    random permutation sorted by answer, so each share holds the test part's answer
    mix to within one sample per answer, and the reward's score does not move with
    the answer mix a random share happens to get; ``"random"`` gives consecutive
    slices of a random permutation (the reference's ``random_split``).
    ``"local"`` holds out ``test_fraction`` of each device's own skewed shard instead
    (a personalisation study: never federating then scores well). ``modality_availability[m]``: probability that a device senses
    modality ``MODALITIES[m]`` (image, text, sensor); a device then draws between
    ``tasks_per_device[0]`` and ``tasks_per_device[1]`` of the tasks its modalities
    allow. A (device, task) shard gets at least ``min_shard`` training samples.
    """

    tasks: tuple[str, ...] = ("scene_qa", "style_qa", "sensor")
    pool_size: int = 2000
    test_fraction: float = 0.1
    eval_split: str = "global"
    eval_shares: str = "stratified"
    dirichlet_alpha: float = 0.1
    modality_availability: tuple[float, float, float] = (1.0, 1.0, 0.6)
    tasks_per_device: tuple[int, int] = (1, 2)
    min_shard: int = 8
    image_size: int = 32
    max_question_tokens: int = 12
    vocab_size: int = 256
    hash_buckets: int = 64
    sensor_length: int = 64

    def __post_init__(self) -> None:
        from hffm_env.data.registry import registered_tasks

        if not isinstance(self.tasks, tuple) or not self.tasks:
            raise ConfigError(f"tasks must be a non-empty tuple of task names, got {self.tasks!r}")
        known = registered_tasks()
        for t in self.tasks:
            if t not in known:
                raise ConfigError(f"tasks entries must be registered tasks {known}, got {t!r}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks must not repeat, got {self.tasks!r}")
        check_int("pool_size", self.pool_size, low=16, high=MAX_COUNT)
        check_real("test_fraction", self.test_fraction, low=0.0, high=0.5, low_inclusive=False)
        check_choice("eval_split", self.eval_split, EVAL_SPLITS)
        check_choice("eval_shares", self.eval_shares, EVAL_SHARES)
        check_real("dirichlet_alpha", self.dirichlet_alpha, low=0.0, low_inclusive=False, high=MAX_FACTOR)
        if not isinstance(self.modality_availability, tuple) or len(self.modality_availability) != len(MODALITIES):
            raise ConfigError(
                f"modality_availability must be a tuple of {len(MODALITIES)} probabilities "
                f"for {MODALITIES}, got {self.modality_availability!r}"
            )
        for m, p in zip(MODALITIES, self.modality_availability):
            check_real(f"modality_availability[{m}]", p, low=0.0, high=1.0)
        lo, hi = (
            self.tasks_per_device
            if isinstance(self.tasks_per_device, tuple) and len(self.tasks_per_device) == 2
            else (None, None)
        )
        check_int("tasks_per_device[0]", lo, low=1, high=len(self.tasks))
        check_int("tasks_per_device[1]", hi, low=lo, high=len(self.tasks))
        check_int("min_shard (at most pool_size)", self.min_shard, low=1, high=self.pool_size)
        check_int("image_size", self.image_size, low=8, high=512)
        check_int("max_question_tokens", self.max_question_tokens, low=2, high=512)
        check_int("vocab_size", self.vocab_size, low=64, high=MAX_COUNT)
        check_int("hash_buckets", self.hash_buckets, low=1, high=MAX_COUNT)
        from hffm_env.data.tokenizer import BUILTIN_WORDS, N_SPECIAL

        needed = N_SPECIAL + len(BUILTIN_WORDS) + self.hash_buckets
        if self.vocab_size < needed:
            raise ConfigError(
                f"vocab_size must be >= {needed} (special tokens + {len(BUILTIN_WORDS)} built-in words "
                f"+ hash_buckets={self.hash_buckets}), got {self.vocab_size}"
            )
        check_int("sensor_length", self.sensor_length, low=8, high=MAX_COUNT)

    def tokenizer(self):
        from hffm_env.data.tokenizer import WordTokenizer

        return WordTokenizer(self.max_question_tokens, self.vocab_size, self.hash_buckets)
