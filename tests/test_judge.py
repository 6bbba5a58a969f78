"""judge.py, the model-based verifier: the prompt holds exactly the response's last 20 lines and the reference,
each judgement and garbage parse as they should, grade() decodes greedily within the judge's budget. The PPO
iteration graded by a stand-in judge is in test_ppo.py (it shares the SFT start of the whole runs there)."""
from types import SimpleNamespace

import pytest

import judge
import model as M
from sample import Sample

RESPONSE = "\n".join(f"step {i}" for i in range(25)) + "\nso the answer is \\boxed{7}"  # 26 lines


def test_tail_keeps_exactly_the_last_20_lines():
    lines = RESPONSE.split("\n")
    assert judge.tail(RESPONSE) == "\n".join(lines[6:])  # lines 6..25: 20 lines
    assert judge.tail(RESPONSE).split("\n")[0] == "step 6" and len(judge.tail(RESPONSE).split("\n")) == 20
    assert judge.tail("one\ntwo") == "one\ntwo"  # fewer than 20: all of it
    assert judge.tail("a\n" * 30) == "a\n" * 19  # split on "\n": a trailing newline makes the last line empty


def test_prompt_holds_the_tail_and_the_reference():
    p = judge.judge_prompt(RESPONSE, "7")
    assert "...\nstep 6\nstep 7\n" in p and "step 5\n" not in p and "\\boxed{7}" in p
    assert "Reference answer:\n7\n" in p and "Judgement: correct" in p and "not_found" in p
    _, tok = M.load("tiny")  # no chat template: plain text, as given
    assert judge.judge_prompt(RESPONSE, "7", tok) == p
    seen = {}

    def template(messages, tokenize, add_generation_prompt):
        seen.update(messages=messages, tokenize=tokenize, gen=add_generation_prompt)
        return "<user>" + messages[0]["content"] + "<assistant>"
    chat = SimpleNamespace(chat_template="...", apply_chat_template=template)
    assert judge.judge_prompt(RESPONSE, "7", chat) == "<user>" + p[:-1] + "<assistant>"
    assert seen["messages"][0]["role"] == "user" and seen["tokenize"] is False and seen["gen"] is True


@pytest.mark.parametrize("text, verdict", [
    ("The final answer 7 matches.\nJudgement: correct", "correct"),
    ("Judgement: wrong", "wrong"),
    ("no final answer in the lines. Judgement: not_found", "not_found"),
    ("JUDGEMENT: Correct", "correct"),  # case does not matter (the authors' code would count it wrong)
    ("**Judgement:** correct", "correct"),
    ("Judgement: `wrong`", "wrong"),
    ("Judgement: wrong\nOn second thought, 7 = 7.\nJudgement: correct", "correct"),  # the last verdict counts
    ("Judgement: correct ... no, 8 != 7. Judgement: wrong", "wrong"),
    ("I think it is correct.", None),  # no verdict line
    ("Judgement: correctly handled, but", None),
    ("Judgement: <correct/wrong/not_found>", None),
    ("", None),
    ("\x00\x01 garbage ))) Judgement", None),
])
def test_parse_judgement(text, verdict):
    assert judge.parse_judgement(text) == verdict


def test_grade_is_greedy_and_only_correct_counts(monkeypatch):
    calls = []
    replies = {"1": "Judgement: correct", "2": "Judgement: wrong", "3": "Judgement: not_found", "4": "blah"}

    def stub(model, tok, prompts, n, temperature, top_p, max_new_tokens, keys, batch_size):
        calls.append(dict(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, keys=keys))
        return [[Sample(i, [1], [0.0], replies[p.split("Reference answer:\n")[1][0]], "eos")]
                for i, p in enumerate(prompts)]
    monkeypatch.setattr(judge, "generate", stub)
    ok = judge.grade(None, None, ["a", "b", "c", "d"], ["1", "2", "3", "4"], keys=[5, 6, 7, 8])
    assert ok == [True, False, False, False]
    assert calls == [dict(n=1, temperature=0.0, top_p=1.0, max_new_tokens=1024, keys=[5, 6, 7, 8])]
    assert judge.grade(None, None, [], []) == [] and len(calls) == 1
    with pytest.raises(ValueError, match="2 responses but 1 references"):
        judge.grade(None, None, ["a", "b"], ["1"])
