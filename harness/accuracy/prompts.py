"""Real chat messages shipped with the harness: the validation inputs for models that have a tokenizer.

Everyday requests of different lengths and kinds (fact, explanation, list, code, arithmetic, rewriting), so the
left-padded validation batch mixes prompt lengths and the greedy continuations are real text, not near-ties between
random logits. Each is sent as one user message in the model's chat template (plain text without a template).
"""
from __future__ import annotations

CHAT_PROMPTS = (
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Give me three tips for sleeping better.",
    "Write a Python function that returns the sum of a list of numbers.",
    "If I have 3 apples and buy 5 more, how many apples do I have?",
    "Rewrite this sentence more politely: Send me the report now.",
)


def message_ids(tokenizer, message: str) -> list[int]:
    """A message as the model expects it: in the chat template with the assistant's turn opened, or plain text."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                            tokenize=True)
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return tokenizer.encode(message)
