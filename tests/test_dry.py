"""DRY against every test vector and worked example of the specification (shared docs: dry.md)."""
import math

import pytest
import torch

from harness.accuracy.sampling import apply_dry, sequence_breaker_ids


def _dry_probs(tokens, probs, multiplier, base, allowed, last_n, breakers=()):
    logits = torch.tensor([probs]).log()
    out = apply_dry(logits, torch.tensor([tokens]), multiplier=multiplier, base=base, allowed_length=allowed,
                    sequence_breakers=list(breakers), penalty_last_n=last_n)
    return torch.softmax(out, -1)[0].tolist()


@pytest.mark.parametrize("tokens, probs, mult, base, allowed, last_n, breakers, expected", [
    ([0, 1], [.25] * 4, 1.0, 1.1, 2, 4, (), [.25] * 4),
    ([0, 1, 2, 0, 1], [.25] * 4, 1.0, 1.1, 2, 5, (), [0.296923, 0.296923, 0.109232, 0.296923]),
    ([0, 1, 2, 0, 1], [.2] * 5, 2.0, 1.1, 2, 5, (), [0.241818, 0.241818, 0.032727, 0.241818, 0.241818]),
    ([0, 1, 3, 4, 0, 1], [.2] * 5, 1.0, 1.1, 2, 6, (3,), [.2] * 5),
    ([0, 1, 2, 3, 4, 0, 1], [.2] * 5, 1.0, 1.1, 4, 7, (), [.2] * 5),
])
def test_llama_cpp_vectors(tokens, probs, mult, base, allowed, last_n, breakers, expected):
    got = _dry_probs(tokens, probs, mult, base, allowed, last_n, breakers)
    assert got == pytest.approx(expected, abs=1e-6)


A, B, C, D, Y, NL = 0, 1, 2, 3, 4, 5
V = 6


def _penalty(tokens, breakers=()):
    out = apply_dry(torch.zeros(1, V), torch.tensor([tokens]), multiplier=0.8, base=1.75, allowed_length=2,
                    sequence_breakers=list(breakers), penalty_last_n=-1)
    return (-out[0]).tolist()


def test_worked_example_a():
    p = _penalty([A, B, C, C, B, C, Y, A, B, C])
    assert p[C] == pytest.approx(1.4) and p[Y] == pytest.approx(0.8) and p[B] == 0 and p[A] == 0


def test_worked_example_b_breaker_stops_match():
    tokens = [NL, A, B, C, D, NL, A, B, C]
    assert _penalty(tokens, breakers=[NL])[D] == pytest.approx(1.4)
    assert _penalty(tokens)[D] == pytest.approx(2.45)


def test_worked_example_c_overlapping():
    assert _penalty([A, A, A, A])[A] == pytest.approx(1.4)


def test_worked_example_d_last_token_breaker():
    assert _penalty([A, B, NL, A, B, NL], breakers=[NL]) == [0.0] * V


def test_breaker_token_itself_never_penalised():
    # NL follows a 3-long repeat of "A B" ... but is a breaker
    assert _penalty([A, B, C, NL, A, B, C], breakers=[NL])[NL] == 0.0


def test_batch_rows_independent_and_padding_never_matches():
    ctx = torch.tensor([[A, B, C, A, B], [-1, -1, -1, A, B]])
    out = apply_dry(torch.zeros(2, V), ctx, multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[],
                    penalty_last_n=-1)
    assert out[0, C] == -1.0 and (out[1] == 0).all()


def test_penalty_last_n_limits_the_window():
    tokens = [A, B, C, D, D, D, A, B]
    full = apply_dry(torch.zeros(1, V), torch.tensor([tokens]), multiplier=1.0, base=2.0, allowed_length=2,
                     sequence_breakers=[], penalty_last_n=-1)
    short = apply_dry(torch.zeros(1, V), torch.tensor([tokens]), multiplier=1.0, base=2.0, allowed_length=2,
                      sequence_breakers=[], penalty_last_n=4)
    assert full[0, C] == -1.0 and short[0, C] == 0.0


def test_matches_naive_definition_on_random_contexts():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(2, 60, (1,), generator=gen))
        tokens = torch.randint(0, 4, (n,), generator=gen).tolist()
        breakers = [3] if trial % 2 else []
        got = _penalty_generic(tokens, breakers)
        want = _naive(tokens, breakers)
        assert got == pytest.approx(want, abs=1e-5), tokens


def _penalty_generic(tokens, breakers):
    out = apply_dry(torch.zeros(1, 4), torch.tensor([tokens]), multiplier=0.8, base=1.75, allowed_length=2,
                    sequence_breakers=breakers, penalty_last_n=-1)
    return (-out[0]).tolist()


def _naive(tokens, breakers):
    """The specification, literally: O(n^2) scan."""
    n = len(tokens)
    pen = [0.0] * 4
    if tokens[-1] in breakers:
        return pen
    cap = n
    for j in range(n - 1, -1, -1):
        if tokens[j] in breakers:
            cap = n - 1 - j
            break
    best = {}
    for i in range(n - 1):
        k = 0
        while i - k >= 0 and tokens[i - k] == tokens[n - 1 - k]:
            k += 1
        k = min(k, cap)
        t = tokens[i + 1]
        if t in breakers:
            continue
        best[t] = max(best.get(t, 0), k)
    for t, length in best.items():
        if length >= 2:
            pen[t] = 0.8 * 1.75 ** (length - 2)
    return pen


def test_exponent_is_clamped_finite():
    tokens = [A] * 400
    out = apply_dry(torch.zeros(1, V), torch.tensor([tokens]), multiplier=0.8, base=1.75, allowed_length=2,
                    sequence_breakers=[], penalty_last_n=-1)
    assert math.isfinite(float(out[0, A])) and float(out[0, A]) < -1e30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
def test_cuda_matches_cpu():
    ctx = torch.randint(0, 50, (4, 3000))
    logits = torch.randn(4, 50)
    kw = dict(multiplier=0.8, base=1.75, allowed_length=2, sequence_breakers=[7], penalty_last_n=2048)
    torch.testing.assert_close(apply_dry(logits.cuda(), ctx.cuda(), **kw).cpu(), apply_dry(logits, ctx, **kw))


class _CharTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [ord(ch) for ch in text]


def test_sequence_breaker_ids_from_strings():
    assert sequence_breaker_ids(_CharTokenizer(), ["\n", ":", "ab"]) == sorted({10, 58, 97, 98})
