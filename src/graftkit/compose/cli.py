"""`graft compose …`: thin typer commands over :mod:`graftkit.compose`.

Mount with ``app.add_typer(compose_app, name="compose")``. Heavy imports happen inside commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="CALM composition: train and use bridges between frozen models.", no_args_is_help=True)


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Bridge recipe (YAML).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. optim.lr=3e-4")] = None,
) -> None:
    """Train a bridge from a recipe (resumes from the latest checkpoint in its output folder)."""
    from graftkit.compose.train import train_bridge

    out = train_bridge(recipe, overrides or [])
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line, not one per process
        typer.echo(f"bridge written to {out}")


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Bridge recipe (YAML).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides")] = None,
) -> None:
    """Parse a bridge recipe and print it resolved, without loading any model."""
    import yaml

    from graftkit.compose.recipe import load_recipe

    typer.echo(yaml.safe_dump(load_recipe(recipe, overrides or []).model_dump(mode="json"), sort_keys=False))


@app.command()
def generate(
    bridge: Annotated[Path, typer.Argument(help="Bridge folder (bridge.json + bridge.safetensors).")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Prompt text; repeat for a batch.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 32,
    mode: Annotated[str, typer.Option(help="paper (augments read every token) or encoder (prompt only).")] = "paper",
    sample: Annotated[bool, typer.Option(help="Sample instead of greedy decoding.")] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_k: Annotated[int | None, typer.Option(help="Sample from the k most likely tokens.")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer folder (default: the anchor's).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
) -> None:
    """Continue prompts with a composed model; the models are the ones bridge.json names."""
    import torch
    from transformers import AutoTokenizer

    from graftkit.compose.files import load_bridge, read_manifest
    from graftkit.compose.generate import generate_text

    source = tokenizer or read_manifest(bridge)["anchor"]["path"]
    tok = AutoTokenizer.from_pretrained(source)
    model = load_bridge(bridge).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    texts = generate_text(
        model, tok, prompt, max_new_tokens, mode=mode, do_sample=sample, temperature=temperature, top_k=top_k
    )
    for p, text in zip(prompt, texts, strict=True):
        typer.echo(f"{p}{text}")
