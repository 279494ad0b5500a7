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
