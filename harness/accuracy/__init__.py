"""The accuracy layer: seeded inputs and shipped prompts, samplers, a backend's numerics against the float32 HF
model (logit drift, greedy agreement, perplexity) and the validation of a backend's logits."""
