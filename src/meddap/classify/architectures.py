"""Names of torchvision's classification models, read without importing torch.

Config validation runs every time Snakemake parses the workflow (a no-op rerun too); importing
torchvision there costs seconds. torchvision marks each classification builder in
``torchvision/models/<family>.py`` with ``@register_model()``, so the names are read from those
source files with :mod:`ast`. The import-based list is the fallback when the sources cannot be read.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path


def _registered_names(source: str) -> list[str]:
    names = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call_name = getattr(getattr(decorator, "func", None), "id", None) or getattr(
                getattr(decorator, "func", None), "attr", None
            )
            if call_name != "register_model":
                continue
            explicit = [
                k.value.value for k in decorator.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)
            ]
            names.append(explicit[0] if explicit else node.name)
    return names


@lru_cache(maxsize=1)
def classification_architectures() -> tuple[str, ...]:
    """Sorted names accepted by ``torchvision.models.get_model`` for classification models."""
    spec = importlib.util.find_spec("torchvision")
    names: list[str] = []
    if spec is not None and spec.origin:
        models_dir = Path(spec.origin).parent / "models"
        # Top-level files only: detection, segmentation, video, ... live in sub-packages.
        for path in sorted(models_dir.glob("*.py")):
            try:
                names += _registered_names(path.read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError):
                names = []
                break
    if not names:
        import torchvision

        return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))
    return tuple(sorted(set(names)))
