"""Prompt templates: "a bright ultrasound photo of benign tumor in breast"."""

from __future__ import annotations

import re

NO_ADJECTIVE = "none"
PAPER_ADJECTIVES = (
    "none",
    "colorful",
    "stylized",
    "high-contrast",
    "low-contrast",
    "posterized",
    "solarized",
    "sheared",
    "bright",
    "dark",
)
DEFAULT_TEMPLATE = "{article} {adjective}ultrasound photo of {subject} in breast"
DEFAULT_SUBJECT = "{cls} tumor"
DEFAULT_SUBJECTS = {"normal": "no tumor"}
GENERIC_PROMPT = "an ultrasound photo of breast"
GENERIC_TEMPLATE = "{article} {adjective}ultrasound photo of breast"


def class_subject(cls: str, subjects: dict[str, str] | None = None) -> str:
    """What the prompt says the image shows: 'benign tumor', 'no tumor' for normal, ..."""
    subjects = {**DEFAULT_SUBJECTS, **(subjects or {})}
    return subjects.get(cls, DEFAULT_SUBJECT.format(cls=cls))


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def build_prompt(
    cls: str,
    adjective: str = NO_ADJECTIVE,
    template: str = DEFAULT_TEMPLATE,
    subjects: dict[str, str] | None = None,
) -> str:
    """The prompt for ``cls`` with ``adjective`` ('none' for no adjective), spaced correctly.

    The article agrees with the word after it: "an ultrasound photo ..." without an adjective,
    "a bright ultrasound photo ..." with one.
    """
    adjective_text = "" if adjective in ("", NO_ADJECTIVE) else f"{adjective} "
    after_article = template.split("{article}", 1)[-1].format(adjective=adjective_text, subject="x", cls=cls)
    next_word = after_article.strip()
    prompt = template.format(
        article=_article(next_word),
        adjective=adjective_text,
        subject=class_subject(cls, subjects),
        cls=cls,
    )
    return re.sub(r"\s+", " ", prompt).strip()


def generic_caption(adjective: str = NO_ADJECTIVE) -> str:
    """A caption that names the adjective but no class ("a bright ultrasound photo of breast"), as a
    web caption would: the base model learns what the adjective means, the LoRAs learn the classes."""
    return build_prompt("", adjective, GENERIC_TEMPLATE)


def training_prompt(cls: str, template: str = DEFAULT_TEMPLATE, subjects: dict[str, str] | None = None) -> str:
    """The prompt a class's LoRA is trained with (the no-adjective prompt)."""
    return build_prompt(cls, NO_ADJECTIVE, template, subjects)


def prompt_words(
    classes: list[str],
    adjectives: list[str],
    template: str = DEFAULT_TEMPLATE,
    subjects: dict[str, str] | None = None,
    extra_prompts: list[str] = (),
) -> list[str]:
    """Words of every prompt the workflow can use (the small model's tokenizer learns their merges).

    The paper's adjectives are always included, so adding one of them to a config leaves the
    word list, and with it the pretrained base model, unchanged.
    """
    texts = [GENERIC_PROMPT, *extra_prompts]
    texts += [build_prompt(cls, adj, template, subjects) for cls in classes for adj in {*adjectives, *PAPER_ADJECTIVES}]
    return sorted({word for text in texts for word in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower())})
