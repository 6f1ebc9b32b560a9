"""Reading user YAML (merge and bridge recipes) with errors that name the file and the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from graftkit.errors import RecipeError


def read_mapping(source: str | Path, expected: str) -> dict[str, Any]:
    """A YAML mapping from a file path, or from YAML text when ``source`` is a multi-line string.

    Args:
        source: a path, or YAML text (a ``str`` holding a newline or a colon).
        expected: the fields a recipe of this kind needs, for the "not a mapping" error.

    Raises:
        RecipeError: missing/unreadable file, invalid YAML, or not a mapping.
    """
    where = "recipe"
    if isinstance(source, Path) or ("\n" not in source and ":" not in source):
        path = Path(source)
        text, where = _read_file(path), str(path)
    else:
        text = source
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{where} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{where} must be a YAML mapping with {expected}, got {data!r}.")
    return data


def _read_file(path: Path) -> str:
    try:
        if path.is_dir():
            raise RecipeError(f"Recipe {str(path)!r} is a folder. Pass the path of a YAML recipe file.")
        if not path.is_file():
            raise RecipeError(f"Recipe file {str(path)!r} does not exist. Pass the path of a YAML recipe.")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"Recipe file {str(path)!r} is not UTF-8 text; is it a YAML recipe?") from None
    except (OSError, ValueError) as err:  # unreadable, name too long, NUL in the path …
        raise RecipeError(f"Recipe file {str(path)!r} cannot be read ({err}). Check the path.") from None


def explain(err: ValidationError, title: str, unknown_field: Callable[[tuple[Any, ...]], str] | None = None) -> str:
    """One line per field error of a pydantic validation, under ``title``."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden":
            hint = unknown_field(problem["loc"]) if unknown_field else "unknown field."
            lines.append(f"- `{where}`: {hint}")
        elif problem["type"] == "missing":
            lines.append(f"- `{where}` is required.")
        else:
            lines.append(f"- `{where}`: {problem['msg']} (got {problem.get('input')!r}).")
    return f"{title}:\n" + "\n".join(lines)
