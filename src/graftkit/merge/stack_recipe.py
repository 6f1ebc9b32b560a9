"""A layer stack's recipe (mergekit ``slices:`` with ``passthrough``), checked before any file is opened.

Each slice takes layers ``[start, end)`` of one model (end exclusive, as in mergekit); the output's
layers are the slices' layers in order, renumbered from 0. Planning the tensors is
:mod:`graftkit.merge.layer_stack`'s job, once the checkpoints' headers are open.
"""

from __future__ import annotations

from dataclasses import dataclass

from graftkit.errors import RecipeError
from graftkit.merge.recipe import FilterValue, ModelEntry, Recipe

STACK_METHOD = "passthrough"


@dataclass(frozen=True)
class StackSlice:
    """Layers ``start … end − 1`` of ``model``."""

    model: str
    start: int
    end: int


@dataclass(frozen=True)
class LayerStack:
    """The slices in output order."""

    slices: tuple[StackSlice, ...]

    @property
    def n_layers(self) -> int:
        return sum(s.end - s.start for s in self.slices)

    def layers(self) -> list[tuple[int, int, int]]:
        """``(output layer, slice index, source layer)`` for every output layer, in order."""
        out = []
        for k, piece in enumerate(self.slices):
            out += [(len(out) + offset, k, layer) for offset, layer in enumerate(range(piece.start, piece.end))]
        return out

    @staticmethod
    def place(k: int) -> str:
        """Where slice ``k``'s source is written in the recipe."""
        return f"slices[{k}].sources[0]"


def resolve_stack(recipe: Recipe) -> tuple[Recipe, LayerStack]:
    """Check a ``slices:`` recipe; return it with one ``models`` entry per slice, and its stack.

    The derived ``models`` let every later step treat slice k's source as expert k (its
    ``parameters`` are the source's, over the slice's). :meth:`Recipe.dump` leaves them out.

    Raises:
        RecipeError: every problem at once, each naming its slice and what to write instead.
    """
    assert recipe.slices is not None
    problems = []
    if recipe.merge_method != STACK_METHOD:
        problems.append(
            f"- `merge_method`: `slices:` builds a layer stack, which graftkit does with `{STACK_METHOD}` only; "
            f"merging layer ranges with `{recipe.merge_method}` is not supported. Write `merge_method: "
            f"{STACK_METHOD}`, or list whole models under `models:` to merge them."
        )
    if recipe.base_model is not None:
        problems.append(
            "- `base_model`: a layer stack copies layers and uses no base; remove it (the config and tokenizer "
            "come from the first slice's model)."
        )
    if recipe.tokenizer_options is not None:
        problems.append("- `tokenizer`: tokenizer alignment is not supported with `slices:`; remove it.")
    entries, pieces = [], []
    for k, piece in enumerate(recipe.slices):
        if len(piece.sources) != 1:
            problems.append(
                f"- `slices[{k}].sources`: a passthrough slice takes one source (one model's layer range), got "
                f"{len(piece.sources)}; split it into {len(piece.sources)} slices to stack them."
            )
            continue
        source = piece.sources[0]
        params = {**piece.parameters, **source.parameters}
        problems += _layer_lists(params, f"{LayerStack.place(k)}.parameters")
        entries.append(ModelEntry(model=source.model, parameters=params))
        pieces.append(StackSlice(source.model, *source.layer_range))
    problems += _layer_lists(recipe.parameters, "parameters")
    if problems:
        raise RecipeError("The layer stack has errors:\n" + "\n".join(problems))
    return recipe.model_copy(update={"models": entries}), LayerStack(tuple(pieces))


def _layer_lists(params: dict, where: str) -> list[str]:
    """Per-layer lists have no meaning in a stack (its layers come from several models)."""
    return [
        f"- `{where}.{name}`: per-layer lists are not supported in a layer stack; give a number or "
        "`{filter, value}` entries."
        for name, value in params.items()
        if _has_layer_list(value)
    ]


def _has_layer_list(value) -> bool:
    if isinstance(value, list) and value and isinstance(value[0], FilterValue):
        return any(isinstance(entry.value, list) for entry in value)
    return isinstance(value, list)
