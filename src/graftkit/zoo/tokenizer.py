"""A character-level tokenizer over the fixed alphabet of the zoo's tasks.

One token per character, no merges and no unknown token: every task character is in
:data:`ALPHABET` (a test checks it). Special tokens come first: ``<pad>`` = 0, ``<bos>`` = 1,
``<eos>`` = 2. Encoding adds ``<bos>`` in front; training appends ``<eos>`` after answers.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits + " \n" + "+-*/%=<>()[],.;:!?'\"#_"
"""Every character a task or pre-training document may contain, in token-id order after the specials."""


def vocab() -> dict[str, int]:
    """The token → id mapping: specials, then :data:`ALPHABET` in order."""
    return {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *ALPHABET))}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The zoo tokenizer as a ``transformers`` fast tokenizer.

    ``save_pretrained`` writes ``tokenizer.json``; ``AutoTokenizer.from_pretrained`` loads it back.
    ``tokenizer(text)["input_ids"]`` is ``[bos_id, *one id per character]``.
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    ids = vocab()
    # BPE without merges is exactly a character-level model; with no pre-tokenizer, spaces and
    # newlines are ordinary characters and decoding fuses tokens without inserting anything.
    core = Tokenizer(models.BPE(vocab=ids, merges=[]))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, ids[BOS])]
    )
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
