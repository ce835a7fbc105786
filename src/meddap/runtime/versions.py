"""Versions of the libraries that decide results, recorded beside models and shards."""


def library_versions() -> dict:
    """Versions of the libraries that decide results, written next to models and shards."""
    import importlib.metadata as metadata
    import platform

    versions = {"python": platform.python_version()}
    for name in (
        "meddap",
        "torch",
        "torchvision",
        "diffusers",
        "peft",
        "transformers",
        "numpy",
        "scikit-learn",
        "pillow",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
