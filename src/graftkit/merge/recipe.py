"""Merge recipes: YAML in, a frozen, validated :class:`Recipe` out.

The schema is mergekit's for the methods both tools share (``merge_method``, ``base_model``,
``models: [{model, parameters}]`` or ``slices: [{sources: [{model, layer_range}]}]``,
``parameters``, ``dtype``, ``tokenizer`` / ``tokenizer_source``) plus
graftkit's own fields (``out_dtype``, ``seed``, ``dare``, ``on_missing``, and per model
``stats`` for the data-aware methods). Structural errors are
reported per field with what to write instead; method-level checks live in
:mod:`graftkit.merge.validate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from graftkit.errors import RecipeError
from graftkit.yaml_input import explain, read_mapping

Scalar = Union[bool, int, float, str]  # noqa: UP007 - pydantic resolves this at runtime on 3.10


class FilterValue(BaseModel):
    """``{filter: <substring or glob of the tensor name>, value: …}``; no filter matches all."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filter: str | None = None
    value: Union[Scalar, list[float]]  # noqa: UP007


ParamValue = Union[Scalar, list[FilterValue], list[float]]  # noqa: UP007


class StatsRequest(BaseModel):
    """Statistics for a data-aware method (``fisher``, ``regmean``) to compute before the merge.

    Exactly one data source: a registered ``task`` (its train split) or a ``jsonl`` file of
    ``{prompt, completion}`` rows; ``n`` examples; ``tokenizer`` when the model folder has none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str | None = None
    jsonl: str | None = None
    n: int = Field(256, ge=1)
    tokenizer: str | None = None


def _stats_form(value: Any) -> str:
    return "request" if isinstance(value, (dict, StatsRequest)) else "folder"


StatsField = Annotated[
    Union[Annotated[StatsRequest, Tag("request")], Annotated[str, Tag("folder")]],  # noqa: UP007
    Discriminator(_stats_form),
]


class ModelEntry(BaseModel):
    """One input model, its per-expert parameters and (for data-aware methods) its statistics:
    a folder written by ``graft stats``, or a :class:`StatsRequest` to compute them first."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    stats: StatsField | None = None

    @field_validator("stats")
    @classmethod
    def _non_empty_stats(cls, value: StatsRequest | str | None) -> StatsRequest | str | None:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a statistics folder (from `graft stats`) or {task: NAME, n: 256}, not empty")
        return value


class DareOptions(BaseModel):
    """The DARE pre-step (Yu et al. 2023) applied to every expert's delta before the method."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    density: float = Field(gt=0.0, le=1.0)
    rescale: Literal["paper", "none", "l1"] = "paper"


class SliceSource(BaseModel):
    """Layers ``[start, end)`` of one model (end exclusive, as in mergekit), for a layer stack."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    layer_range: tuple[int, int]
    parameters: dict[str, ParamValue] = Field(default_factory=dict)

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if start < 0 or end <= start:
            why = "is empty" if end == start else "is inverted" if end < start else "starts below 0"
            raise ValueError(
                f"{list(value)} {why}: write [start, end] with 0 <= start < end; end is exclusive, "
                "as in mergekit ([0, 4] takes layers 0 to 3)"
            )
        return value


class SliceEntry(BaseModel):
    """One output slice of a layer stack: ``sources`` (one model's layer range each) and
    ``parameters`` for them (a source's own ``parameters`` take precedence)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sources: list[SliceSource] = Field(min_length=1)
    parameters: dict[str, ParamValue] = Field(default_factory=dict)


class TokenizerOptions(BaseModel):
    """Align embedding and head rows by token: the output vocabulary is the base's, the union of
    every model's, or a named model's (``source``); see ``docs/recipes.md``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field("union", min_length=1)
    pad_to_multiple_of: int | None = Field(None, ge=1)


DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}


class Recipe(BaseModel):
    """A validated merge recipe. See ``docs/recipes.md`` for every field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    merge_method: str
    models: list[ModelEntry] = Field(default_factory=list)
    slices: list[SliceEntry] | None = None
    base_model: str | None = None
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    dare: DareOptions | None = None
    out_dtype: str | None = None
    dtype: str | None = None
    seed: int = 0
    tokenizer_source: str | None = None
    tokenizer: TokenizerOptions | None = None
    on_missing: Literal["error", "base", "skip"] = "error"

    @field_validator("base_model")
    @classmethod
    def _non_empty_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be the path of a model folder, not an empty string")
        return value

    @field_validator("out_dtype", "dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = DTYPE_ALIASES.get(value, value)
        if value not in DTYPES:
            raise ValueError(f"must be one of {', '.join(DTYPES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_input_kind(self) -> Recipe:
        if bool(self.models) == bool(self.slices):
            raise ValueError(
                "give either `models:` (the models to merge) or `slices:` (a layer stack), not both or neither"
            )
        if self.tokenizer is not None and self.tokenizer_source is not None:
            raise ValueError("give either `tokenizer:` or mergekit's older `tokenizer_source:`, not both")
        return self

    @property
    def tokenizer_options(self) -> TokenizerOptions | None:
        """``tokenizer:``, or ``tokenizer_source: S`` read as ``tokenizer: {source: S}``; None: no alignment."""
        if self.tokenizer_source is not None:
            return TokenizerOptions(source=self.tokenizer_source)
        return self.tokenizer

    def dump(self) -> dict[str, Any]:
        """The recipe as written (for ``graft_recipe.yaml``): a layer stack's derived ``models`` left out."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"models"} if self.slices else None)

    @property
    def storage_dtype(self) -> str | None:
        """``out_dtype``, falling back to mergekit's ``dtype``; None means the base's dtype."""
        return self.out_dtype or self.dtype

    def model_paths(self) -> list[str]:
        return [entry.model for entry in self.models]


# mergekit fields graftkit does not implement, with what to do instead.
UNSUPPORTED = {
    "modules": "per-module recipes are not supported; use `{filter, value}` parameter lists.",
    "chat_template": "copy the chat template into the base's tokenizer_config.json instead.",
}
IGNORED = {"int8_mask"}  # mergekit memory option; graftkit always computes in float32


def parse_recipe(source: str | Path | dict[str, Any]) -> Recipe:
    """Parse a recipe from a YAML path, a YAML string or a dict.

    Raises:
        RecipeError: the file is missing, not YAML, or a field is wrong (all field errors at once).
    """
    data = _load_mapping(source)
    for key, advice in UNSUPPORTED.items():
        if key in data:
            raise RecipeError(f"Recipe field `{key}` is not supported by graftkit: {advice}")
    if ("models" in data) == ("slices" in data):
        raise RecipeError(
            "The recipe has errors:\n- `models` / `slices`: give either `models:` (the models to merge) or "
            "`slices:` (a layer stack of `sources: [{model, layer_range}]`), not both or neither."
        )
    if isinstance(data.get("parameters"), dict):
        data["parameters"] = {k: v for k, v in data["parameters"].items() if k not in IGNORED}
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(explain(err, "The recipe has errors", _unknown_field_hint)) from None


def _load_mapping(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return dict(source)
    return read_mapping(source, "`merge_method` and `models`")


def _param_place(name: str) -> str | None:
    """Where a known method parameter belongs, or None when no method has one of that name."""
    from graftkit.methods import METHODS
    from graftkit.methods.spec import WEIGHT

    params = [WEIGHT] + [p for _, spec in METHODS.items() for p in spec.params if p.name == name]
    found = [p for p in params if p.name == name]
    if not found:
        return None
    if any(p.per_expert for p in found):
        return (
            f"give it per model, as `models: [{{model: PATH, parameters: {{{name}: …}}}}]`, "
            "or once for every model under top-level `parameters:`"
        )
    return "put it under top-level `parameters:`"


def _unknown_field_hint(loc: tuple[Any, ...]) -> str:
    name = str(loc[-1])
    if len(loc) == 3 and loc[0] == "models":
        return (
            f"unknown field `{name}` in a model entry. Per-model parameters go under "
            f"`parameters:`, e.g. `- model: PATH\\n  parameters: {{{name}: …}}`."
        )
    if len(loc) >= 4 and loc[0] == "models" and loc[2] == "stats":  # models.N.stats.request.FIELD
        return f"unknown field `{name}` in `stats:`; a statistics request takes task, jsonl, n and tokenizer."
    if loc[:1] == ("tokenizer",) and name == "tokens":
        return "per-token embedding sources (`tokens:`) are not supported; tokens take the rows docs/recipes.md states."
    if len(loc) == 1:
        where = _param_place(name)
        return (
            f"unknown top-level field `{name}`. "
            + (f"`{name}` is a method parameter: {where}; " if where else "Method parameters go under `parameters:`; ")
            + "valid fields are "
            + ", ".join(Recipe.model_fields)
            + "."
        )
    return f"unknown field `{name}`."
