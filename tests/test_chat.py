"""task=chat: one load, then one answer per line of stdin, streamed; /reset and /quit; each turn in chat.jsonl.
Through the command line with stdin piped in (the tiny random model: token ids in and out), and the conversation
fitting into the preallocated cache with a real chat template (SmolLM2's tokenizer, where its package is
installed)."""
import json

import pytest

from helpers import run_cli


@pytest.mark.slow
def test_chat_answers_each_line_until_quit(tmp_path):
    out = tmp_path / "chat"
    proc = run_cli("task=chat", "grid.prompt_lens=[16]", "grid.new_tokens=8", "generate.max_new_tokens=4",
                   f"output_dir={out}", stdin="1 2 3\n/reset\n4 5 6 7\n/quit\n9 9\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[4 tokens, finished by length]") == 2  # two prompts, nothing after /quit
    assert proc.stderr.count("loading hf-flashattn-staticcache") == 1 + proc.stderr.count(": done in")
    assert "(conversation reset)" in proc.stderr
    turns = [json.loads(line) for line in (out / "chat.jsonl").read_text().splitlines()]
    assert [t["prompt"] for t in turns] == ["1 2 3", "4 5 6 7"] and all(len(t["new_ids"]) == 4 for t in turns)


def _template_tokenizer():
    """A real fast tokenizer (word level) with a chat template: what an instruct checkpoint brings."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<|user|>", "<|assistant|>", "hello", "there", "how", "are", "you", "fine", "thanks"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m.role }}|> {{ m.content }} {% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tokenizer


def test_a_long_conversation_drops_its_oldest_turns(capsys):
    from harness.run.chat import _fit, conversation_ids

    tokenizer = _template_tokenizer()
    turns = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "fine thanks"},
             {"role": "user", "content": "how are you"}]
    whole = conversation_ids(tokenizer, turns)
    assert len(whole) == 3 + 3 + 4 + 1  # each turn: role + words; then the assistant's turn opened
    assert _fit(tokenizer, True, turns, "how are you", None, room=len(whole)) == whole
    fitted = _fit(tokenizer, True, turns, "how are you", None, room=6)
    assert fitted == conversation_ids(tokenizer, [{"role": "user", "content": "how are you"}])
    assert len(turns) == 1 and "oldest turn was dropped" in capsys.readouterr().err
    assert _fit(tokenizer, True, turns, "how are you", None, room=3) is None  # the prompt alone is too long
