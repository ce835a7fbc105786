"""Read and validate config files as ``snakemake --configfile`` does, failing with one line: the
file, line and column of a YAML syntax error, or the key and the schema's message of an invalid
value (never the schema itself)."""

from __future__ import annotations

from pathlib import Path

import yaml

from meddap.config.checks import ConfigError


def read_config_file(path: str | Path) -> dict:
    """One config file as a mapping; a ``ConfigError`` naming the file (and line and column)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        content = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        raise ConfigError(yaml_error_line(path, error)) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys, not a {type(content).__name__}")
    return content


def yaml_error_line(path: Path, error: yaml.MarkedYAMLError) -> str:
    """``file:line:column: problem`` (1-based, as editors count), with where PyYAML's context began
    (a missing ':' is found on the line after the one that lacks it)."""
    mark = error.problem_mark or error.context_mark
    problem = error.problem or error.context or "not valid YAML"
    if mark is None:
        return f"{path}: YAML syntax: {problem}"
    line = f"{path}:{mark.line + 1}:{mark.column + 1}: YAML syntax: {problem}"
    context = error.context_mark
    if error.context and context is not None and (context.line, context.column) != (mark.line, mark.column):
        line += f" ({error.context} at line {context.line + 1}, column {context.column + 1})"
    return line + "; check the indentation and the ':' after each key"


def schema_error_line(error) -> str:
    """A jsonschema ``ValidationError`` as ``key.path: message`` without the schema dump."""
    key = ".".join(str(part) for part in error.absolute_path)
    message = error.message
    if error.validator == "additionalProperties":
        message += " (a misspelt key? config/README.md lists every key)"
    if len(message) > 300:  # an enum or a long value: the start says enough
        message = message[:297] + "..."
    return f"{key}: {message}" if key else message


def validate_config(config: dict, schema_file: str | Path) -> None:
    """Validate in place (the schema's defaults filled in, as Snakemake's ``validate``); a
    ``ConfigError`` of one line on the first error."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        # Snakemake's source-file objects (a deployed workflow's schema) pass through as they are.
        validate(config, str(schema_file) if isinstance(schema_file, Path) else schema_file)
    except WorkflowError as error:
        cause = error.__context__  # Snakemake raises its error while handling jsonschema's
        if not isinstance(cause, jsonschema.ValidationError):
            raise ConfigError(" ".join(str(error).split())) from None
        raise ConfigError(schema_error_line(cause)) from None


def load_config(files: list[str | Path], schema_file: str | Path | None = None) -> dict:
    """Each file deep-merged over the previous ones in order, then validated with the schema's
    defaults: what the workflow's ``config`` is for ``snakemake --configfile FILE...``."""
    from snakemake.utils import update_config

    from meddap.config.study import protocol_file

    config: dict = {}
    for file in files:
        update_config(config, read_config_file(file))
    validate_config(config, schema_file or protocol_file("config.schema.yaml"))
    return config
