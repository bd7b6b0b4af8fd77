"""``task=chat``: load the backend once, then answer prompts read from stdin, one per line, streamed to stdout.

A question costs what the decode costs, not a new process, import and load each time. The conversation is kept
(each turn goes back into the model's chat template with the answers so far) until ``/reset``; ``/quit`` or the
end of input ends it. The backend's cache is preallocated for the largest grid cell
(``max(grid.prompt_lens) + grid.new_tokens``): when a conversation outgrows it, its oldest turns are dropped and
a line on stderr says so. Without a tokenizer (random-weight presets) prompts and answers are token ids.
Every turn is appended to ``chat.jsonl`` in the run directory.
"""
from __future__ import annotations

import json
import sys

from harness.run.generate import TextStream, answer_text, eos_ids, generate, has_chat_template, parse_prompt

COMMANDS = "/reset forgets the conversation, /quit (or end of input) ends it"


def conversation_ids(tokenizer, turns: list[dict]) -> list[int]:
    """The whole conversation in the model's chat template, with the assistant's turn opened."""
    ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def run_chat_task(cfg, job, handle, lines=None, out=None) -> int:
    """The prompt loop. ``lines``: where prompts come from (stdin); ``out``: where answers go (stdout)."""
    lines = sys.stdin if lines is None else lines
    out = sys.stdout if out is None else out
    tokenizer = job.source.tokenizer()
    templated = has_chat_template(tokenizer)
    capacity = job.cfg.grid.new_tokens + max(job.cfg.grid.prompt_lens)
    max_new = min(cfg.generate.max_new_tokens, capacity - 1)
    eos = eos_ids(job.hf_config, tokenizer)
    print(f"chat with {job.backend} on {job.device} ({job.source.name}); one prompt per line; {COMMANDS}"
          + ("" if tokenizer is not None else "; no tokenizer: prompts and answers are token ids"),
          file=sys.stderr, flush=True)
    turns: list[dict] = []
    log = job.out_dir / "chat.jsonl"
    asked = 0
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            turns = []
            print("(conversation reset)", file=sys.stderr, flush=True)
            continue
        turns.append({"role": "user", "content": text})
        ids = _fit(tokenizer, templated, turns, text, job, capacity - max_new)
        if ids is None:
            turns = []
            continue
        streamer = TextStream(tokenizer, out)
        result = generate(handle, [ids], job.device, cfg.sampling, max_new, eos, seed=cfg.seed + asked,
                          tokenizer=tokenizer, stop=list(cfg.generate.stop),
                          on_token=lambda row, token, streamer=streamer: streamer.add(token))
        asked += 1
        new = result.new_ids[0]
        answer = answer_text(tokenizer, new) if tokenizer is not None else " ".join(map(str, new))
        print(f"\n[{len(new)} tokens, finished by {result.finish_reasons[0]}]", file=out, flush=True)
        turns.append({"role": "assistant", "content": answer})
        with open(log, "a") as f:
            f.write(json.dumps({"prompt": text, "prompt_tokens": len(ids), "answer": answer, "new_ids": new,
                                "finish_reason": result.finish_reasons[0]}) + "\n")
    return 0


def _fit(tokenizer, templated: bool, turns: list[dict], text: str, job, room: int) -> list[int] | None:
    """The prompt ids of the conversation, oldest turns dropped until it fits ``room`` tokens; None when even
    the last prompt alone does not fit (said on stderr)."""
    while True:
        if templated:
            ids = conversation_ids(tokenizer, turns)
        else:  # no template: the prompt alone (plain text, or token ids without a tokenizer)
            ids = parse_prompt(text, tokenizer, job.hf_config)
        if len(ids) <= room:
            return ids
        if len(turns) <= 1:
            print(f"(this prompt is {len(ids)} tokens; at most {room} fit: raise grid.prompt_lens)",
                  file=sys.stderr, flush=True)
            return None
        del turns[:2]  # the oldest question and its answer
        print("(the conversation outgrew the cache: its oldest turn was dropped)", file=sys.stderr, flush=True)
