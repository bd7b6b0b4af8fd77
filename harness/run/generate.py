"""Text generation on any backend, through its hooks only: prefill a (left-padded) batch of prompts, then decode
steps with the configured samplers; KV reset between requests; stop at max_new_tokens, EOS or a stop string.

With a tokenizer that has a chat template (instruct models), the prompt is sent as one user message with the
assistant's turn opened, and the end-of-turn token (the tokenizer's EOS) ends the answer."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch

from harness.accuracy.inputs import left_pad
from harness.accuracy.prompts import message_ids
from harness.accuracy.sampling import build_processors, next_tokens, sequence_breaker_ids
from harness.errors import UserError


@dataclass
class Generation:
    prompt_ids: list[list[int]]
    new_ids: list[list[int]]
    finish_reasons: list[str]


def eos_ids(config, tokenizer=None) -> set[int]:
    ids = set()
    for source in (config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def generate(handle, prompts: list[list[int]], device: str, sampling_cfg, max_new_tokens: int, eos: set[int],
             seed: int = 0, tokenizer=None, stop: list[str] = (),
             on_token: Callable[[int, int], None] | None = None) -> Generation:
    """Generate for a batch of prompts (token id lists). ``on_token(row, token)`` streams each new token."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UserError("generation needs at least one non-empty prompt", "give prompt=... with some text or ids")
    breakers = sequence_breaker_ids(tokenizer, sampling_cfg.dry_sequence_breakers) if tokenizer is not None else []
    processors = build_processors(sampling_cfg, breakers)
    generator = torch.Generator(device=device).manual_seed(seed)
    ids, lens = left_pad([torch.tensor(p) for p in prompts])
    batch, width = ids.shape
    # the context the samplers see: left padding as -1, which never matches (DRY) and is never "seen"
    context = ids.clone()
    for b in range(batch):
        context[b, : width - int(lens[b])] = -1
    context = context.to(device)
    handle.reset_kv()
    same_length = bool((lens == width).all())
    logits = handle.prefill(input_ids=ids.to(device), prompt_lens=None if same_length else lens.to(device))
    new_ids: list[list[int]] = [[] for _ in range(batch)]
    reasons = ["length"] * batch
    done = torch.zeros(batch, dtype=torch.bool)
    eos_tensor = torch.tensor(sorted(eos), dtype=torch.long) if eos else torch.empty(0, dtype=torch.long)
    for step in range(max_new_tokens):
        tokens = next_tokens(logits.float(), context, processors, sampling_cfg.greedy, generator)  # [B, 1]
        host = tokens.view(-1).cpu()  # one small copy per step: the loop needs the tokens to stop and stream
        for b in range(batch):
            if done[b]:
                continue
            t = int(host[b])
            new_ids[b].append(t)
            if on_token:
                on_token(b, t)
            if t in eos_tensor.tolist():
                done[b], reasons[b] = True, "eos"
            elif stop and tokenizer is not None:
                text = tokenizer.decode(new_ids[b])
                if any(s in text for s in stop):
                    done[b], reasons[b] = True, "stop"
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        context = torch.cat([context, tokens.to(context.device)], dim=1)
        logits = handle.decode_step(tokens=tokens.to(device))
    handle.reset_kv()
    return Generation([list(p) for p in prompts], new_ids, reasons)


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def use_chat(setting: bool | None, tokenizer) -> bool:
    """``generate.chat``: None means yes when the tokenizer has a chat template (instruct models)."""
    if setting and not has_chat_template(tokenizer):
        raise UserError("generate.chat=true, but this model's tokenizer has no chat template",
                        "drop generate.chat (or set generate.chat=false) to send the prompt as plain text")
    return has_chat_template(tokenizer) if setting is None else bool(setting)


def parse_prompt(prompt: str | None, tokenizer, config, chat: bool = False) -> list[int]:
    """Token ids of the prompt: chat-templated (``chat``), plain text with a tokenizer, or ids given as text
    without one."""
    if prompt is None or not str(prompt).strip():
        raise UserError("task=generate needs a prompt", 'add prompt="..." (text with a tokenizer, token ids without)')
    if tokenizer is not None:
        return message_ids(tokenizer, str(prompt)) if chat else tokenizer.encode(str(prompt))
    try:
        ids = [int(tok) for tok in str(prompt).replace(",", " ").split()]
    except ValueError as exc:
        raise UserError("this model has no tokenizer (random-weight preset), so the prompt must be token ids",
                        'give prompt="1 15 27 ..." or a checkpoint with a tokenizer in model.path') from exc
    bad = [i for i in ids if not 0 <= i < config.vocab_size]
    if bad:
        raise UserError(f"token ids {bad[:5]} are outside the vocabulary (0..{config.vocab_size - 1})",
                        "give ids below the vocabulary size")
    return ids


def answer_text(tokenizer, ids: list[int]) -> str:
    """The generated text without special tokens (the end-of-turn token is not part of the answer)."""
    return tokenizer.decode(ids, skip_special_tokens=True)


class TextStream:
    """Prints tokens as they come. With a tokenizer, the text is decoded from all tokens so far and only the new
    part printed: a token alone can decode to half a UTF-8 character or lose its leading space."""

    def __init__(self, tokenizer, out):
        self.tokenizer, self.out, self.ids, self.shown = tokenizer, out, [], 0

    def add(self, token: int) -> None:
        if self.tokenizer is None:
            print(f"{token} ", end="", file=self.out, flush=True)
            return
        self.ids.append(token)
        text = answer_text(self.tokenizer, self.ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return
        print(text[self.shown:], end="", file=self.out, flush=True)
        self.shown = len(text)


def run_generate_task(cfg, job, handle) -> int:
    tokenizer = job.source.tokenizer()
    config = job.hf_config
    prompt = cfg.prompt if cfg.prompt is not None else cfg.generate.prompt
    chat = use_chat(cfg.generate.chat, tokenizer)
    prompt_ids = parse_prompt(prompt, tokenizer, config, chat)
    if len(prompt_ids) + cfg.generate.max_new_tokens > job.cfg.grid.new_tokens + max(job.cfg.grid.prompt_lens):
        raise UserError(f"prompt ({len(prompt_ids)} tokens) + generate.max_new_tokens "
                        f"({cfg.generate.max_new_tokens}) exceeds the preallocated length",
                        "raise grid.prompt_lens (the backend preallocates for the largest grid cell)")
    out = sys.stdout
    if tokenizer is None:
        print("(no tokenizer: random-weight preset, token ids in and out)", file=sys.stderr)
    elif chat:
        print("(the prompt goes in as a user message in the model's chat template; generate.chat=false sends it "
              "as plain text)", file=sys.stderr)
    print(f"prompt: {prompt}", file=out)
    print("output: ", end="", file=out, flush=True)

    streamer = TextStream(tokenizer, out)

    def stream(row: int, token: int) -> None:
        if cfg.generate.stream:
            streamer.add(token)

    result = generate(handle, [prompt_ids], job.device, cfg.sampling, cfg.generate.max_new_tokens,
                      eos_ids(config, tokenizer), seed=cfg.seed, tokenizer=tokenizer, stop=list(cfg.generate.stop),
                      on_token=stream)
    if not cfg.generate.stream:
        text = answer_text(tokenizer, result.new_ids[0]) if tokenizer else " ".join(map(str, result.new_ids[0]))
        print(text, end="", file=out)
    print(f"\n[{len(result.new_ids[0])} tokens, finished by {result.finish_reasons[0]}]", file=out, flush=True)
    import json

    (job.out_dir / "generation.json").write_text(json.dumps({
        "prompt": prompt, "prompt_ids": prompt_ids, "new_ids": result.new_ids[0],
        "chat": chat,
        "text": answer_text(tokenizer, result.new_ids[0]) if tokenizer else None,
        "finish_reason": result.finish_reasons[0], "backend": job.backend, "seed": cfg.seed}, indent=2))
    return 0
