"""DRY on real text: SmolLM2-135M-Instruct generating with and without the DRY sampler from prompts that make it
loop, over many seeds (``python -m tools.dry_text``).

For each seed and setting, one left-padded batch holds every prompt ``--rows`` times (each row draws its own
samples) and decodes ``--new-tokens`` tokens through the harness's generate loop on the HF backend; a row stops at
the end-of-turn token. Repetition is measured on each answer's token ids:

- ``longest_repeat``: the longest n-gram that occurs at least twice in the answer (occurrences may overlap);
- ``repeated_4gram_share``: the share of the answer's 4-grams that already occurred earlier in it.

Writes one row per answer (``--out``, CSV; the text too) and prints the per-prompt means with and without DRY.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Found by sampling everyday requests at temperature 0.7: without DRY the model repeats itself on these (the days
# of the week over and over, a chorus line again and again); requests it answers and ends were left out.
LOOPING_PROMPTS = (
    "List the days of the week, many times.",
    "List the months of the year, again and again.",
    "Write a song with a chorus.",
    "Write a long poem about the sea.",
)


def longest_repeat(ids: list[int]) -> int:
    """Length of the longest n-gram occurring at least twice (overlap allowed); 0 when no token repeats."""
    best = 0
    for n in range(1, len(ids)):
        seen, found = set(), False
        for i in range(len(ids) - n + 1):
            gram = tuple(ids[i:i + n])
            if gram in seen:
                found = True
                break
            seen.add(gram)
        if not found:
            break  # no n-gram repeats, so no longer one can
        best = n
    return best


def repeated_ngram_share(ids: list[int], n: int = 4) -> float:
    """Share of the n-grams that already occurred earlier in the sequence (0 = none repeats)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def open_hf(source, max_batch: int, max_seq: int, cache_dir: Path):
    import torch

    from harness.plugin.loadspec import LoadSpec
    from harness.plugin.plugins import PluginRegistry

    registry = PluginRegistry.discover()
    name = "hf-flashattn-staticcache"
    handle = registry.open(name)
    handle.load(spec=LoadSpec(model=source, dtype=torch.float32, device="cpu", options=registry.defaults(name),
                              max_batch=max_batch, max_seq=max_seq, task="generate", cache_dir=cache_dir))
    return handle


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2, help="samples per prompt and seed (rows of one batch)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--dry-multiplier", type=float, default=0.8)
    parser.add_argument("--cache-dir", default=None, help="artifact cache (the converted checkpoint)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    return parser.parse_args()


def sample_answers(args: argparse.Namespace) -> list[dict]:
    """Every prompt ``args.rows`` times per seed, with DRY off and on: one row per answer with its repetition."""
    from harness.accuracy.prompts import message_ids
    from harness.config.schema import SamplingConfig
    from harness.model.artifacts import default_cache_dir
    from harness.model.sources import ModelSource
    from harness.run.generate import answer_text, eos_ids, generate

    preset = yaml.safe_load((ROOT / "conf" / "model" / "smollm2-135m.yaml").read_text())
    source = ModelSource.from_config(preset, 0, args.cache_dir)
    tokenizer = source.tokenizer()
    prompts = [message_ids(tokenizer, p) for p in LOOPING_PROMPTS]
    rows = [(i, p) for i, p in enumerate(prompts) for _ in range(args.rows)]
    max_seq = max(len(p) for p in prompts) + args.new_tokens
    handle = open_hf(source, len(rows), max_seq, Path(args.cache_dir).expanduser() if args.cache_dir
                     else default_cache_dir())
    plain = SamplingConfig(temperature=args.temperature)
    settings = {"off": plain, "on": replace(plain, dry_multiplier=args.dry_multiplier)}
    results = []
    try:
        for seed in range(args.seeds):
            for dry, sampling in settings.items():
                out = generate(handle, [p for _, p in rows], "cpu", sampling, args.new_tokens,
                               eos_ids(source.config(), tokenizer), seed=seed, tokenizer=tokenizer)
                print(f"seed {seed} dry {dry}: done", flush=True)
                for (i, _), ids, reason in zip(rows, out.new_ids, out.finish_reasons):
                    results.append({"prompt": LOOPING_PROMPTS[i], "dry": dry, "seed": seed, "tokens": len(ids),
                                    "finish": reason, "longest_repeat": longest_repeat(ids),
                                    "repeated_4gram_share": round(repeated_ngram_share(ids), 4),
                                    "text": answer_text(tokenizer, ids)})
    finally:
        handle.close()
    return results


def print_summary(table, args: argparse.Namespace) -> None:
    """The per-prompt means with DRY off and on, then the means over all prompts."""
    import torch

    from tools import print_and_save

    summary = (table.groupby(["prompt", "dry"])
               .agg(answers=("seed", "size"), tokens=("tokens", "mean"), longest_repeat=("longest_repeat", "mean"),
                    repeated_4gram_share=("repeated_4gram_share", "mean"))
               .reset_index())
    overall = table.groupby("dry")[["tokens", "longest_repeat", "repeated_4gram_share"]].mean().reset_index()
    print_and_save(summary.round(3).to_dict("records"), None)
    print(f"\nall prompts, {args.seeds} seeds x {args.rows} rows, temperature {args.temperature}, "
          f"DRY multiplier {args.dry_multiplier} (base 1.75, allowed_length 2), torch {torch.__version__}:")
    print(overall.round(3).to_string(index=False))


def main() -> None:
    import torch

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = sample_answers(args)
    import pandas as pd

    table = pd.DataFrame(results)
    if args.out:
        table.to_csv(args.out, index=False)
    print_summary(table, args)


if __name__ == "__main__":
    main()
