"""Study files: YAML in, a validated pydantic model out, with errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from graftkit.errors import RecipeError

Model = TypeVar("Model", bound=BaseModel)


def load_study_file(
    model: type[Model], path: Path | None = None, overrides: dict[str, Any] | None = None, *, what: str = "study"
) -> Model:
    """Parse the YAML study file ``path`` (``None``: every default) into ``model``.

    Args:
        model: the study's pydantic settings class.
        overrides: top-level fields that replace the file's.
        what: the study's name in error messages, e.g. ``"DARE study"``.

    Raises:
        RecipeError: the file cannot be read or is not YAML, or a field is wrong (naming it).
    """
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise RecipeError(f"cannot read study file {str(path)!r}: {err}") from err
    data.update(overrides or {})
    try:
        return model.model_validate(data)
    except ValidationError as err:
        where = str(path) if path else "the default study"
        raise RecipeError(f"{where} is not a valid {what}:\n{err}") from err
