import pytest

from meddap.settings.prompts import PAPER_ADJECTIVES, build_prompt, training_prompt


@pytest.mark.parametrize(
    ("cls", "adjective", "expected"),
    [
        ("benign", "bright", "a bright ultrasound photo of benign tumor in breast"),
        ("benign", "none", "an ultrasound photo of benign tumor in breast"),
        ("malignant", "high-contrast", "a high-contrast ultrasound photo of malignant tumor in breast"),
        ("normal", "none", "an ultrasound photo of no tumor in breast"),
        ("normal", "dark", "a dark ultrasound photo of no tumor in breast"),
    ],
)
def test_prompt_wording_and_spacing(cls, adjective, expected):
    assert build_prompt(cls, adjective) == expected


def test_article_follows_the_next_word():
    assert build_prompt("benign", "odd").startswith("an odd ultrasound")


def test_training_prompt_is_the_no_adjective_prompt():
    for cls in ("benign", "malignant", "normal"):
        assert training_prompt(cls) == build_prompt(cls, "none")


def test_every_paper_adjective_gives_single_spaces():
    for adjective in PAPER_ADJECTIVES:
        prompt = build_prompt("malignant", adjective)
        assert "  " not in prompt and prompt == prompt.strip()
        assert ("ultrasound photo of malignant tumor in breast") in prompt


def test_custom_template_and_subjects():
    prompt = build_prompt(
        "cyst", "bright", template="{article} {adjective}sonogram of {subject}", subjects={"cyst": "a simple cyst"}
    )
    assert prompt == "a bright sonogram of a simple cyst"
