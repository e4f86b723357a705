"""The tiny real VLM (SmolLM2 + trained CLIP tower): shipping, data, metrics, tasks."""

from __future__ import annotations

import json

import pytest
import torch

from headpursuit import AttentionSites, Head, capture, steer
from headpursuit.evaluation.vision import data
from headpursuit.evaluation.vision.caption import keyword_stats
from headpursuit.evaluation.vision.cider import cider
from headpursuit.evaluation.vision.class_names import CLASS_NAMES, class_names, normalise
from headpursuit.evaluation.vision.classify import prompt_for
from headpursuit.models.tiny_vlm import IMAGE_TOKEN, N_IMAGE_TOKENS, SHIPPED_DIR, vlm_prompt
from tiny_vlms import out_proj_inputs

# ---------------------------------------------------------------- fast: no model -------


def test_shipped_files_are_small_and_complete():
    names = {p.name for p in SHIPPED_DIR.iterdir()}
    assert {"vision.safetensors", "config.json", "preprocessor_config.json"} <= names
    assert "training_log.json" in names
    total = sum(p.stat().st_size for p in SHIPPED_DIR.iterdir())
    assert total < 20 * 2**20
    config = json.loads((SHIPPED_DIR / "config.json").read_text())
    assert config.get("image_token_id", config.get("image_token_index")) == 16
    assert config["vision_config"]["image_size"] // config["vision_config"]["patch_size"] == 4


def test_prompt_has_one_image_token():
    prompt = vlm_prompt("What digit is this?")
    assert prompt.count(IMAGE_TOKEN) == 1
    assert prompt.endswith("<|im_start|>assistant\n")
    assert N_IMAGE_TOKENS == 16


def test_shape_scenes_are_seeded_and_captioned_left_to_right():
    first, again = data.shape_scene(3), data.shape_scene(3)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.answer == again.answer == first.references[0]
    for example in data.shapes("test", 20):
        for phrase in example.answer.split(" and "):
            a, size, colour, kind = phrase.split()
            assert a == "a" and size in data.SHAPE_SIZES and colour in data.SHAPE_COLOURS
            assert kind in data.SHAPE_KINDS
    tests = {e.image.tobytes() for e in data.shapes("test", 30)}
    selects = {e.image.tobytes() for e in data.shapes("select", 30)}
    assert len(tests & selects) <= 1  # different seeds; identical drawings are only chance


def test_class_name_lists():
    sizes = {name: len(names) for name, names in CLASS_NAMES.items()}
    assert sizes == {
        "mnist": 10,
        "svhn": 10,
        "fashion_mnist": 10,
        "digits": 10,
        "gtsrb": 43,
        "eurosat": 10,
        "resisc45": 45,
        "dtd": 47,
    }
    assert class_names("Fashion-MNIST")[9] == "ankle boot"
    with pytest.raises(ValueError, match="known"):
        class_names("imagenet")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("Seven", "seven"), ("A seven.", "seven"), (" ankle boot\nmore", "ankle boot"), ("7", "7")],
)
def test_normalise(raw, clean):
    assert normalise(raw) == clean


def test_cider_scores_overlap_per_caption():
    references = [
        ["a small red circle", "a red circle"],
        ["a large blue square and a small red circle"],
        ["a green triangle"],
        ["a small white square and a large purple triangle"],
    ]
    candidates = ["A small red circle.", "a large blue square", "a blue triangle", "nothing"]
    mean, per = cider(references, candidates)
    assert len(per) == 4 and mean == pytest.approx(sum(per) / 4)
    assert per[3] == 0.0  # no n-gram in common
    assert per[0] > per[2] > 0.0  # an exact match of a reference beats one shared word
    swapped_mean, swapped = cider(references[::-1], candidates[::-1])
    assert swapped == pytest.approx(per[::-1]) and swapped_mean == pytest.approx(mean)


def test_keyword_stats():
    share, per = keyword_stats(
        ["a red circle and a blue square", "a square", "Red!"], ["red", "blue"]
    )
    assert share == pytest.approx(2 / 3)
    assert per == pytest.approx(1.0)


# ---------------------------------------------------------------- slow: the shipped VLM -


@pytest.fixture(scope="module")
def tiny_vlm():
    from headpursuit import load_model

    return load_model("tiny-vlm")


@pytest.mark.slow
def test_load_model_assembles_the_shipped_weights(tiny_vlm):
    """load_model("tiny-vlm") carries exactly the shipped weights (float16 or float32 on disk,
    float32 in the model), in a tower of the shape its config.json records."""
    from safetensors.torch import load_file

    from headpursuit.models.tiny_vlm import WEIGHTS_FILE

    shipped = load_file(str(SHIPPED_DIR / WEIGHTS_FILE))
    state = tiny_vlm.model.state_dict()
    assert shipped and all(name in state for name in shipped)
    for name, weight in shipped.items():
        torch.testing.assert_close(state[name], weight.float(), atol=0.0, rtol=0.0)
    recorded = json.loads((SHIPPED_DIR / "config.json").read_text())["vision_config"]
    tower = tiny_vlm.model.config.vision_config
    assert (tower.hidden_size, tower.num_hidden_layers) == (
        recorded["hidden_size"],
        recorded["num_hidden_layers"],
    )


@pytest.mark.slow
def test_shipped_weights_see_the_images(tiny_vlm):
    """The shipped model answers held-out images it never trained on: digits, land cover and
    Fashion-MNIST mostly right (held-out accuracy 0.98, 0.99 and 0.80 on 300 images at
    training time; 39, 39 and 30 of these 40), and captions name the scene's colours left to
    right, checked word by word against the drawn scene (0.92 of 300; 19 of these 20)."""
    from headpursuit.evaluation.vision.caption import caption_images
    from headpursuit.evaluation.vision.classify import accuracy

    for name, floor in (("digits", 0.8), ("eurosat_like", 0.8), ("fashion", 0.7)):
        examples = data.load_split(name, "test", 40)
        names = list(data.get_dataset(name).class_names)
        _, answers = accuracy(tiny_vlm, examples, names)
        right = sum(normalise(a) == e.answer for a, e in zip(answers, examples, strict=True))
        assert right >= floor * len(examples), (name, answers)
        assert len(set(answers)) >= 8  # no collapse onto a few answers
    scenes = data.shapes("test", 20)
    captions = caption_images(tiny_vlm, scenes, max_new_tokens=14)
    palette = set(data.SHAPE_COLOURS)
    named = [[w for w in c.lower().split() if w in palette] for c in captions]
    truth = [[w for w in e.answer.split() if w in palette] for e in scenes]
    assert sum(n == t for n, t in zip(named, truth, strict=True)) >= 16, captions


@pytest.mark.slow
def test_image_pooling_matches_hand_computed(tiny_vlm):
    """capture(pooling="image") == mean over image positions of each o_proj input slice."""
    pytest.importorskip("sklearn", reason="digits need scikit-learn (the vlm extra)")
    examples = data.digits("test")[:3]
    prompts = [prompt_for(tiny_vlm, e.question) for e in examples]
    images = [e.image for e in examples]
    activations = capture(tiny_vlm, prompts, images=images, pooling="image", progress=False)
    sites = AttentionSites(tiny_vlm.model)
    inputs = tiny_vlm.processor(images=images, text=prompts, return_tensors="pt")
    is_image = inputs["input_ids"] == 16  # [B, T]
    assert int(is_image.sum(-1)[0]) == N_IMAGE_TOKENS
    seen = out_proj_inputs(tiny_vlm.model, inputs)
    for layer in (0, 13, 29):
        z = seen[layer]  # [B, T, n_heads * head_dim]
        pooled = torch.stack([z[b, is_image[b]].mean(0) for b in range(len(examples))])
        expected = pooled.view(len(examples), sites.n_heads, sites.head_dim)
        torch.testing.assert_close(activations.pooled[:, layer], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_text_only_logits_equal_plain_smollm(tiny_vlm, smollm):
    prompts = ["The capital of France is", "Two plus two equals four because"]
    for prompt in prompts:
        ids = smollm.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            plain = smollm.model(**ids).logits
            vlm = tiny_vlm.model(**ids).logits
        torch.testing.assert_close(vlm, plain, atol=0.0, rtol=0.0)


@pytest.mark.slow
def test_steering_image_positions_leaves_text_only_prompts_unchanged(tiny_vlm):
    pytest.importorskip("sklearn", reason="digits need scikit-learn (the vlm extra)")
    model = tiny_vlm.model
    heads = [Head(20, 1), Head(25, 4), Head(29, 0)]
    ids = tiny_vlm.tokenizer("The colour of the sky is", return_tensors="pt")
    example = data.digits("test")[0]
    image_inputs = tiny_vlm.processor(
        images=[example.image], text=[prompt_for(tiny_vlm, example.question)], return_tensors="pt"
    )
    with torch.inference_mode():
        text_before = model(**ids).logits
        image_before = model(**image_inputs).logits
        with steer(model, heads, -1.0, positions="image"):
            text_after = model(**ids).logits
            image_after = model(**image_inputs).logits
    torch.testing.assert_close(text_after, text_before, atol=0.0, rtol=0.0)
    assert not torch.allclose(image_after[:, -1], image_before[:, -1])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_classify_and_caption_commands(tmp_path):
    """The commands on the shipped VLM: experiment artifacts with every arm, and a table."""
    from typer.testing import CliRunner

    from headpursuit.cli import app
    from headpursuit.evaluation.experiment import ExperimentResult

    pytest.importorskip("sklearn", reason="digits need scikit-learn (the vlm extra)")
    runner = CliRunner()
    small = ["--n-select", "4", "--n-eval", "3", "--ks", "3", "--controls", "2"]
    out = tmp_path / "classify.json"
    result = runner.invoke(app, ["classify", "digits", *small, "--compare", "evr", "-o", str(out)])
    assert result.exit_code == 0, result.output
    saved = ExperimentResult.load(out)
    assert saved.task == "classify" and saved.primary == "correct"
    assert [s.name for s in saved.sets] == ["digits"] and len(saved.sets[0].clusters) == 3
    assert [a.arm for a in saved.arms] == ["baseline", "selected", "evr", "control", "control"]
    assert "correct / unmodified model" in result.stdout and f"Wrote {out}" in result.stdout
    out = tmp_path / "caption.json"
    result = runner.invoke(
        app, ["caption", *small, "--compare", "", "--alphas", "5", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    saved = ExperimentResult.load(out)
    assert saved.task == "caption" and saved.direction == "increase"
    assert {"concept_words", "any_concept_word", "cider"} <= set(saved.baseline.items["shapes"])
    assert "cider / unmodified model" in result.stdout
