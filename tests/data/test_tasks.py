"""The task suite: seeded, cached, well-formed, learnable signal; registry; tokenizer; VQA folders."""

import json

import numpy as np
import pytest

from hffm_env import ConfigError
from hffm_env.data import (
    DataConfig,
    TaskData,
    WordTokenizer,
    build_task,
    load_vqa_folder,
    register_task,
    register_vqa_folder,
    registered_tasks,
    task_pool,
)
from hffm_env.data.synthetic import SCENE_ANSWERS, STYLES, render_scenes

CFG = DataConfig(pool_size=200)


@pytest.mark.parametrize("name", ["scene_qa", "style_qa", "sensor", "digits_qa"])
def test_builtin_tasks_are_well_formed_and_seeded(name):
    a = task_pool(name, 120, 7, CFG)
    b = build_task(name, 120, np.random.default_rng([7, __import__("zlib").crc32(name.encode())]), CFG)
    assert len(a) == 120 and a.label.max() < len(a.answers)
    for field in ("label", "image", "tokens", "sensor"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or np.array_equal(x, y)
    assert not np.array_equal(task_pool(name, 120, 8, CFG).label, a.label)
    if a.image is not None:
        assert a.image.shape == (120, 32, 32, 3) and a.image.dtype == np.uint8
        assert a.tokens.shape == (120, CFG.max_question_tokens) and (a.tokens[:, 0] == 1).all()
    # several answers occur: not a constant task
    assert len(np.unique(a.label)) >= 3


def test_pools_are_cached_and_read_only():
    a = task_pool("scene_qa", 64, 1, CFG)
    assert task_pool("scene_qa", 64, 1, CFG) is a
    with pytest.raises(ValueError):
        a.image[0, 0, 0, 0] = 1


def test_scene_pixels_match_ground_truth():
    from hffm_env.data.synthetic import COLOR_NAMES, COLORS

    scene = render_scenes(np.random.default_rng(0), 50, 32)
    palette = np.array([COLORS[c] for c in COLOR_NAMES])
    assert scene["present"][:, 0].all() and set(np.unique(scene["style"])) <= set(range(len(STYLES)))
    for i in range(50):
        for k in np.nonzero(scene["present"][i])[0]:
            x, y = (scene["center"][i, k] * 32).astype(int)
            assert tuple(scene["image"][i, y, x]) == tuple(palette[scene["color"][i, k]])
    # the background is drawn darker than any shape colour
    assert scene["image"][:, 0, 0].max() < 0.61 * 245 + 1


def test_scene_answers_follow_the_question():
    data = task_pool("scene_qa", 300, 3, CFG)
    tok = CFG.tokenizer()
    yes, no = SCENE_ANSWERS.index("yes"), SCENE_ANSWERS.index("no")
    is_there = data.tokens[:, 1] == tok.word_id("is")
    assert set(np.unique(data.label[is_there])) <= {yes, no}
    how_many = data.tokens[:, 1] == tok.word_id("how")
    assert set(SCENE_ANSWERS[i] for i in np.unique(data.label[how_many])) <= {"0", "1", "2", "3"}


def test_sensor_classes_are_separable_but_noisy():
    d = task_pool("sensor", 600, 0, CFG)
    # a nearest-centroid on the power spectrum beats chance clearly but is not perfect
    spec = np.abs(np.fft.rfft(d.sensor, axis=1))
    cent = np.stack([spec[d.label == k].mean(0) for k in range(len(d.answers))])
    pred = np.argmin(((spec[:, None] - cent[None]) ** 2).sum(-1), axis=1)
    acc = (pred == d.label).mean()
    assert 1.5 / len(d.answers) < acc < 0.99


def test_user_registered_task():
    @register_task("parity_test_task", modalities=("sensor",), answers=("even", "odd"))
    def build(n, rng, config):
        x = rng.integers(0, 100, size=n)
        return TaskData(
            "parity_test_task",
            ("even", "odd"),
            (x % 2).astype(np.int64),
            sensor=np.repeat(x[:, None], config.sensor_length, 1).astype(np.float32),
        )

    assert "parity_test_task" in registered_tasks()
    cfg = DataConfig(tasks=("parity_test_task", "sensor"), pool_size=64, tasks_per_device=(1, 2))
    assert len(task_pool("parity_test_task", 16, 0, cfg)) == 16
    with pytest.raises(ConfigError, match="already registered"):
        register_task("parity_test_task", modalities=("sensor",), answers=("a", "b"))(build)
    with pytest.raises(ConfigError, match="modalities"):
        register_task("x", modalities=("smell",), answers=("a", "b"))


def test_tokenizer_known_unknown_and_padding():
    tok = WordTokenizer(max_length=6)
    ids, mask = tok.encode(["What color is the square?", "zebra quokka"])
    assert ids[0, 0] == 1 and ids[0, 1] == tok.word_id("what") and mask[0].sum() == 6
    unknown = ids[1, 1:3]
    assert np.all(unknown >= tok.vocab_size - tok.hash_buckets) and mask[1].sum() == 3
    assert np.array_equal(tok.encode(["zebra"])[0][0, 1], WordTokenizer(max_length=6).encode(["zebra"])[0][0, 1])


def test_bad_data_config_names_field():
    for kwargs, field in [
        ({"tasks": ("nope",)}, "tasks"),
        ({"dirichlet_alpha": 0.0}, "dirichlet_alpha"),
        ({"test_fraction": 0.9}, "test_fraction"),
        ({"tasks_per_device": (0, 1)}, "tasks_per_device"),
        ({"modality_availability": (1.0, 1.0)}, "modality_availability"),
        ({"image_size": 4}, "image_size"),
    ]:
        with pytest.raises(ConfigError, match=field):
            DataConfig(**kwargs)


def _write_vqa_folder(root, with_labels=True):
    from PIL import Image

    (root / "images").mkdir()
    recs = []
    for i, (color, answer) in enumerate([((255, 0, 0), "red"), ((0, 0, 255), "blue"), ((255, 0, 0), "red")]):
        Image.new("RGB", (20, 14), color).save(root / "images" / f"im{i}.png")
        recs.append({"image": f"im{i}.png", "question": "What color is the image?", "answer": answer})
    (root / "ann.json").write_text(json.dumps(recs))
    if with_labels:
        (root / "label2id.json").write_text(json.dumps({"blue": 0, "red": 1}))
    return recs


def test_vqa_folder_loader(tmp_path):
    _write_vqa_folder(tmp_path)
    data = load_vqa_folder(tmp_path, CFG)
    assert data.answers == ("blue", "red") and list(data.label) == [1, 0, 1]
    assert data.image.shape == (3, 32, 32, 3) and tuple(data.image[1, 5, 5]) == (0, 0, 255)
    register_vqa_folder("tiny_vqa_test", tmp_path, ("blue", "red"))
    assert len(build_task("tiny_vqa_test", 5, np.random.default_rng(0), CFG)) == 5


def test_vqa_folder_unknown_answer_is_an_error_unless_skipped(tmp_path):
    recs = _write_vqa_folder(tmp_path)
    recs.append({"image": "im0.png", "question": "q", "answer": "green"})
    (tmp_path / "ann.json").write_text(json.dumps(recs))
    with pytest.raises(ValueError, match="record 3: answer 'green'"):
        load_vqa_folder(tmp_path, CFG)
    assert len(load_vqa_folder(tmp_path, CFG, unknown_answers="skip")) == 3
    with pytest.raises(FileNotFoundError, match="ann.json"):
        load_vqa_folder(tmp_path / "nowhere", CFG)


# ---------------------------------------------------------------------- bad data at the door
def _sensor_task(n=7, **arrays):
    rng = np.random.default_rng(0)
    fields = {"sensor": rng.normal(size=(n, 64)).astype(np.float32), **arrays}
    return TaskData("bad_task", ("a", "b"), (np.arange(n) % 2).astype(np.int64), **fields)


def _image_task(n=7, image=None, tokens=None, attention=None):
    tokens = np.ones((n, 12), dtype=np.int64) if tokens is None else tokens
    return TaskData(
        "bad_task",
        ("a", "b"),
        np.zeros(n, dtype=np.int64),
        image=np.zeros((n, 32, 32, 3), dtype=np.uint8) if image is None else image,
        tokens=tokens,
        attention=np.ones_like(tokens) if attention is None else attention,
    )


def _with(arr, index, value):
    arr = arr.copy()
    arr[index] = value
    return arr


SENSOR = np.random.default_rng(0).normal(size=(7, 64)).astype(np.float32)
TOKENS = np.ones((7, 12), dtype=np.int64)


@pytest.mark.parametrize(
    "build,message",
    [
        (
            lambda: _sensor_task(sensor=_with(SENSOR, (3, 5), np.nan)),
            r"sensor must be finite.* 1 of 7 rows \(first: \[3\]\)",
        ),
        (
            lambda: _sensor_task(sensor=_with(SENSOR, (slice(4, 6), 0), -np.inf)),
            r"sensor.* 2 of 7 rows \(first: \[4, 5\]\)",
        ),
        (lambda: _sensor_task(sensor=SENSOR.astype(np.int64)), r"sensor must be a float \[N, T\] array, got int64"),
        (lambda: _sensor_task(sensor=SENSOR[:, :, None]), r"sensor must be a float \[N, T\] array"),
        (
            lambda: _image_task(tokens=_with(TOKENS, (2, 1), -4)),
            r"tokens must be ids >= 0, not in 1 of 7 rows \(first: \[2\]\)",
        ),
        (lambda: _image_task(attention=_with(TOKENS, (6, 0), 2)), r"attention must be 0 or 1, not in .*\[6\]"),
        (lambda: _image_task(attention=TOKENS[:, :5]), r"attention must have the shape of tokens"),
        (
            lambda: _image_task(image=np.zeros((7, 32, 32, 3), np.float32)),
            r"image must be a uint8 \[N, H, W, 3\] array",
        ),
        (lambda: _image_task(image=np.zeros((7, 32, 32, 4), np.uint8)), r"image must be a uint8 \[N, H, W, 3\]"),
        (lambda: _image_task(image=np.zeros((7, 32, 32), np.uint8)), r"image must be a uint8 \[N, H, W, 3\]"),
        (lambda: _image_task(image=np.zeros((7, 0, 32, 3), np.uint8)), r"image must be a uint8 \[N, H, W, 3\]"),
        (lambda: _image_task(image=[[0]] * 7), r"image must be a uint8 \[N, H, W, 3\] array, got list"),
        (
            lambda: TaskData("bad_task", ("a", "b"), np.array([0, 1, 2, 1, -1]), sensor=SENSOR[:5]),
            r"label must be in \[0, 1\], not in 2 of 5 rows \(first: \[2, 4\]\)",
        ),
    ],
)
def test_task_data_refuses_bad_values_naming_the_task_the_field_and_the_rows(build, message):
    with pytest.raises(ValueError, match=r"task 'bad_task': " + message):
        build()


def test_a_task_registered_with_nan_sensor_rows_fails_when_it_is_built():
    from hffm_env import make_scenario
    from hffm_env.federation import Federation

    @register_task("nan_sensor_test_task", modalities=("sensor",), answers=("a", "b"), replace=True)
    def build(n, rng, config):
        signal = rng.normal(size=(n, config.sensor_length)).astype(np.float32)
        signal[3::7, 10] = np.nan  # 1 of every 7 rows
        return TaskData("nan_sensor_test_task", ("a", "b"), rng.integers(0, 2, n), sensor=signal)

    with pytest.raises(ValueError, match=r"task 'nan_sensor_test_task': sensor must be finite.*first: \[3, 10, 17"):
        Federation(make_scenario("tiny", data__tasks=("nan_sensor_test_task", "sensor")))


@pytest.mark.parametrize(
    "arrays,message",
    [
        (
            {"tokens": _with(TOKENS, (5, 3), 256)},
            r"tokens must be ids in \[0, 255\] \(data.vocab_size\), not in .*\[5\]",
        ),
        ({"tokens": np.ones((7, 13), np.int64)}, r"tokens must have at most 12 columns"),
        ({"image": np.zeros((7, 16, 16, 3), np.uint8)}, r"image must be 32x32 pixels \(data.image_size\), got 16x16"),
    ],
)
def test_build_task_refuses_data_that_does_not_fit_the_config(arrays, message):
    @register_task("misfit_test_task", modalities=("image", "text"), answers=("a", "b"), replace=True)
    def build(n, rng, config):
        return _image_task(**arrays)

    with pytest.raises(ValueError, match=r"task 'bad_task': " + message):
        build_task("misfit_test_task", 7, np.random.default_rng(0), CFG)


def test_build_task_refuses_a_sensor_of_the_wrong_length():
    @register_task("short_sensor_test_task", modalities=("sensor",), answers=("a", "b"), replace=True)
    def build(n, rng, config):
        return _sensor_task(sensor=SENSOR[:, :32])

    with pytest.raises(ValueError, match=r"sensor must have 64 samples per row \(data.sensor_length\), got 32"):
        build_task("short_sensor_test_task", 7, np.random.default_rng(0), CFG)


def test_vqa_folder_refuses_unreadable_images_and_bad_records_naming_the_record(tmp_path):
    recs = _write_vqa_folder(tmp_path)
    (tmp_path / "images" / "im1.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"record 1: image .*im1.png cannot be read as an image"):
        load_vqa_folder(tmp_path, CFG)
    png = (tmp_path / "images" / "im0.png").read_bytes()
    (tmp_path / "images" / "im1.png").write_bytes(png[: len(png) // 2])  # truncated
    with pytest.raises(ValueError, match=r"record 1: image .*im1.png cannot be read"):
        load_vqa_folder(tmp_path, CFG)
    (tmp_path / "images" / "im1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"record 1: image .*im1.png not found"):
        load_vqa_folder(tmp_path, CFG)
    (tmp_path / "ann.json").write_text(json.dumps(recs[:1] + ["im1.png"]))
    with pytest.raises(ValueError, match=r"record 1 must be an object"):
        load_vqa_folder(tmp_path, CFG)


@pytest.mark.parametrize("key", ["image", "image_id"])
def test_vqa_folder_in_the_reference_generators_layout(tmp_path, key):
    """The reference's dataset generators write ``ann.json`` and the images under ``train/``."""
    from PIL import Image

    (tmp_path / "train").mkdir()
    recs = []
    for i, (color, answer) in enumerate([((0, 255, 0), "Green "), ((255, 255, 0), "yellow"), ((0, 255, 0), "green")]):
        Image.new("RGB", (40, 30), color).save(tmp_path / "train" / f"{i:05d}.jpg")
        recs.append({key: f"{i:05d}.jpg", "question": "What colour dominates?", "answer": answer})
    (tmp_path / "ann.json").write_text(json.dumps(recs))
    data = load_vqa_folder(tmp_path, CFG)
    assert data.answers == ("green", "yellow") and list(data.label) == [0, 1, 0]
    assert data.image.shape == (3, 32, 32, 3)
    assert tuple(data.image[1, 16, 16]) == pytest.approx((255, 255, 0), abs=3)  # JPEG rounds
