"""How a KV cache is handed to and read back from a transformers model, across the versions we run on.

transformers renamed the forward argument and the output field ``past_key_values`` to ``cache`` (5.2x; the old name
warns that it goes in 5.40). The GPU machines run 5.17, which knows only the old name. So the name is read from the
model's own ``forward`` signature, never from a version number.
"""
from __future__ import annotations

import inspect
from typing import Any


def cache_keyword(model) -> str:
    """The keyword ``model.forward`` takes its KV cache under: ``cache`` (5.2x) or ``past_key_values`` (older)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(output) -> Any:
    """The cache a forward returned (the ``cache`` field where the output has one, else ``past_key_values``)."""
    fields = getattr(type(output), "__dataclass_fields__", {})
    return output.cache if "cache" in fields else output.past_key_values
