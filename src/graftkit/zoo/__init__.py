"""The model zoo: synthetic tasks, a character tokenizer, and tiny Llamas trained on them.

Submodules: :mod:`~graftkit.zoo.tasks` (task families), :mod:`~graftkit.zoo.tokenizer`,
:mod:`~graftkit.zoo.presets` (model sizes), :mod:`~graftkit.zoo.train`, :mod:`~graftkit.zoo.cache`
and :mod:`~graftkit.zoo.build` (the whole zoo). Torch and transformers load only with the
modules that need them.
"""
