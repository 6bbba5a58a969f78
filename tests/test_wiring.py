"""Wiring checks of the sampler and the evaluator as a whole, each written against a named mutation that the rest
of the suite did not catch (issue: tests that catch wiring bugs). The PPO loop's wiring tests are in test_ppo.py."""
import math
from collections import Counter

import pytest
import torch

import eval as E
import model as M
from sample import Sample, generate


def fixed_logits_model(logits, prompt_ids):
    """The tiny model with its output layer rebuilt so that the next-token logits after `prompt_ids` are exactly
    `logits` (V,): each output row is logits[v] * h / |h|^2 for that prompt's last hidden state h."""
    m, tok = M.load("tiny", seed=5)
    m.cfg.tie_word_embeddings = False
    with torch.no_grad():
        h = m(torch.tensor([prompt_ids])).hidden[0, -1]  # (D,)
        m.lm_head = torch.nn.Linear(h.numel(), logits.numel(), bias=False)
        m.lm_head.weight.copy_(logits[:, None] * h[None, :] / h.dot(h))
        got = m(torch.tensor([prompt_ids]), return_logits=True).logits[0, -1]
    assert torch.allclose(got, logits, atol=1e-4)
    return m, tok


def test_generate_draws_from_the_tempered_nucleus():
    """One fixed logit vector, 600 one-token samples at temperature 0.6, top-p 0.88: every draw lies in the nucleus
    (the smallest set of most likely tokens with mass >= 0.88 at that temperature) and the frequencies follow the
    renormalised tempered probabilities. Caught mutations: generate ignoring top_p (9% of draws fall outside),
    ignoring the temperature (at 1.0 the nucleus takes a fourth token, d, with 11% of the draws)."""
    _, tok = M.load("tiny")
    prompt = tok.encode("7+5=")
    base = torch.full((128,), -30.0)
    chars = "abcdef"
    probs = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]
    for c, p in zip(chars, probs):
        base[tok.convert_tokens_to_ids(c)] = math.log(p)
    m, tok = fixed_logits_model(base, prompt)
    # by hand: p^(1/0.6) renormalised = 0.551, 0.2517, 0.1074, 0.0547, 0.0233, 0.0119; cumulative 0.551, 0.8027,
    # 0.9101: the nucleus at 0.88 is {a, b, c}, renormalised 0.6054, 0.2766, 0.1181
    tempered = [p ** (1 / 0.6) for p in probs]
    z = sum(tempered)
    assert sum(tempered[:2]) / z < 0.88 <= sum(tempered[:3]) / z
    want = {c: w / sum(tempered[:3]) for c, w in zip(chars[:3], tempered[:3])}
    outs = generate(m, tok, [prompt], n=600, temperature=0.6, top_p=0.88, max_new_tokens=1, seed=3)[0]
    counts = Counter(s.text for s in outs)
    assert set(counts) <= set(want), counts
    for c, p in want.items():  # SE of a frequency at n = 600 is <= 0.02: 4 SE
        assert abs(counts[c] / 600 - p) < 0.08, (c, counts[c] / 600, p)
    # the log-prob reported for each token is that of the full tempered distribution (what PPO's ratio needs)
    full = torch.log_softmax(base / 0.6, -1)
    s = outs[0]
    assert s.logprobs[0] == pytest.approx(full[s.token_ids[0]].item(), abs=1e-4)


def test_evaluate_counts_right_answers_as_right(monkeypatch):
    """evaluate() on a stub sampler whose answers are known: two right, one wrong. Caught mutation: the
    verifier's verdict inverted (accuracy 1/3)."""
    rows = [{"problem": "1+4", "answer": "5"}, {"problem": "3+4", "answer": "7"}, {"problem": "4+5", "answer": "9"}]
    answers = {"1+4": r"so \boxed{5}", "3+4": r"the answer is \boxed{7}", "4+5": r"\boxed{4}"}

    def stub_generate(model, tok, prompts, n=1, **kw):
        out = []
        for i, p in enumerate(prompts):
            text = next(a for q, a in answers.items() if q in p)
            out.append([Sample(i, [5] * 3, [-1.0] * 3, text, "eos") for _ in range(n)])
        return out
    monkeypatch.setattr(E, "generate", stub_generate)
    _, tok = M.load("tiny")
    metrics, records = E.evaluate(None, tok, rows, n=2)
    assert metrics["accuracy"] == pytest.approx(2 / 3) and metrics["n"] == 6
    assert [r["correct"] for r in records] == [True, True, True, True, False, False]
    assert [r["extracted"] for r in records][::2] == ["5", "7", "4"]
