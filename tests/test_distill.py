"""Tests for distill.py: rejection sampling (moved from test_data.py / test_cli_errors.py), the action-prompting
state machine and its pipeline, answer extraction, the k-sample agreement filter, batches over ranks, resuming,
and runs of the tiny model through sample.py (one process and torchrun). Scripted stand-in models return canned
text per prompt or per action, so every pipeline is checked against hand-written expectations."""
import ast
import json
import os
import re
import subprocess
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest

import data
import dist
import distill
from scripts import ROOT, run_script

Sample = namedtuple("Sample", "text token_ids finish_reason")
Grade = namedtuple("Grade", "correct reason extracted")


def S(text, finish="eos"):
    return Sample(text, list(range(len(text))), finish)


def boxed(text):
    found = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return found[-1] if found else None


def exact_grader(texts, golds, kinds):
    assert set(kinds) <= {"math"}
    return [Grade(boxed(t) == g, "", boxed(t)) for t, g in zip(texts, golds)]  # truthy tuples: .correct counts


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------------------
# reject: rejection sampling
# ---------------------------------------------------------------------------------------------------------

PROBLEMS = [{"id": "a", "problem": "1+1", "answer": "2"}, {"id": "b", "problem": "2+2", "answer": "4"},
            {"id": "c", "problem": "3+3", "answer": "6"}]
SAMPLES = {  # prompt -> 4 samples: correct ones end with the right box
    "1+1": [S("x \\boxed{3}"), S("long \\boxed{2}"), S("\\boxed{2}"), S("yy \\boxed{2}")],
    "2+2": [S("\\boxed{5}"), S("cut \\boxed{4}", "length"), S("no answer", "length"), S("\\boxed{1}")],
    "3+3": [S("six \\boxed{6}"), S("\\boxed{7}"), S("\\boxed{9}"), S("\\boxed{8}")],
}


def fake_generate(calls):
    def generate(prompts, n, keys, **kw):
        calls.append((list(prompts), list(keys)))
        return [SAMPLES[p.split("\n")[0]][:n] for p in prompts]
    return generate


def test_reject_keeps_exactly_the_verified_finished_samples():
    calls, batches = [], []
    kept, stats = distill.reject(fake_generate(calls), PROBLEMS, 4, max_per_prompt=2, grade_fn=exact_grader,
                                 batch_prompts=2, on_batch=batches.append)
    assert calls == [([data.format_prompt("1+1"), data.format_prompt("2+2")], [0, 1]),
                     ([data.format_prompt("3+3")], [2])]  # keys: the prompts' positions
    assert [(r["id"], r["response"]) for r in kept] == [("a", "long \\boxed{2}"), ("a", "\\boxed{2}"),
                                                        ("c", "six \\boxed{6}")]
    assert kept[0] == {"id": "a", "problem": "1+1", "answer": "2", "prompt": "1+1\nAnswer in \\boxed{}.\n",
                       "response": "long \\boxed{2}", "n_tokens": 14}
    assert [b["start"] for b in batches] == [0, 2]
    assert [r for b in batches for rec in b["records"] for r in rec["kept"]] == kept
    assert [rec["n_accepted"] for b in batches for rec in b["records"]] == [3, 0, 1]
    hist = {k: 0 for k in distill.pass_rate_histogram([], 4)}
    hist.update({"0": 1, "(0.2,0.3]": 1, "(0.7,0.8]": 1})
    assert stats == {"prompts": 3, "samples_per_prompt": 4, "samples": 12, "accepted": 4, "truncated": 2,
                     "mean_pass_rate": 4 / 12, "prompts_with_kept": 2, "kept": 3,
                     "mean_kept_tokens": (14 + 9 + 13) / 3, "pass_rate_hist": hist}
    kept1, stats1 = distill.reject(fake_generate([]), PROBLEMS, 4, grade_fn=exact_grader)
    assert [r["response"] for r in kept1] == ["long \\boxed{2}", "six \\boxed{6}"] and stats1["kept"] == 2
    assert stats1["accepted"] == 4 and stats1["mean_kept_tokens"] == 13.5
    everything, _ = distill.reject(fake_generate([]), PROBLEMS, 4, max_per_prompt=None, grade_fn=exact_grader)
    assert len(everything) == 4


def test_reject_with_the_real_verifier():
    verify = pytest.importorskip("verify")
    kept, stats = distill.reject(fake_generate([]), PROBLEMS, 4,
                                 grade_fn=lambda t, g, k: verify.grade_batch(t, g, k, workers=1))
    assert [r["response"] for r in kept] == ["long \\boxed{2}", "six \\boxed{6}"] and stats["accepted"] == 4


def test_reject_rejects_a_wrong_number_of_samples():
    with pytest.raises(ValueError, match="expected 4 each"):
        distill.reject(lambda prompts, n, keys: [[S("a")] * 3 for _ in prompts], PROBLEMS, 4, grade_fn=exact_grader)
    with pytest.raises(ValueError, match=">= 1"):
        distill.reject(fake_generate([]), PROBLEMS, 0, grade_fn=exact_grader)


def test_pass_rate_histogram_bins():
    hist = distill.pass_rate_histogram([0, 1, 2, 4, 4, 3, 0], 4)
    assert list(hist)[:3] == ["0", "(0.0,0.1]", "(0.1,0.2]"] and list(hist)[-1] == "(0.9,1.0]" and len(hist) == 11
    assert {k: v for k, v in hist.items() if v} == {"0": 2, "(0.2,0.3]": 1, "(0.4,0.5]": 1, "(0.7,0.8]": 1,
                                                    "(0.9,1.0]": 2}
    assert {k: v for k, v in distill.pass_rate_histogram([1, 10], 10).items() if v} == {"(0.0,0.1]": 1,
                                                                                        "(0.9,1.0]": 1}


def fake_model(monkeypatch, generate, loaded=None):
    """model.load / sample.generate / verify.grade_batch stand-ins for the CLI (the modules it imports lazily)."""
    def load(name, dtype=None, device=None):
        if loaded is not None:
            loaded.append((name, str(dtype), str(device)))
        return f"M:{name}", None
    monkeypatch.setitem(sys.modules, "model", types.SimpleNamespace(load=load))
    monkeypatch.setitem(sys.modules, "sample", types.SimpleNamespace(generate=generate))
    monkeypatch.setitem(sys.modules, "verify", types.SimpleNamespace(grade_batch=exact_grader))


def test_reject_cli_wires_model_sample_and_verify(tmp_path, monkeypatch, capsys):
    seen, loaded = [], []

    def generate(model, tok, prompts, n, temperature, top_p, max_new_tokens, seed, keys, batch_size, progress):
        seen.append((model, tok, n, temperature, top_p, max_new_tokens, seed, keys, batch_size, progress))
        return [SAMPLES[p.split("\n")[0]][:n] for p in prompts]

    fake_model(monkeypatch, generate, loaded)
    prompts = write_rows(tmp_path / "p.jsonl", PROBLEMS)
    out = tmp_path / "sft.jsonl"
    distill.main(["reject", "--teacher", "T", "--prompts", prompts, "--n-samples", "4", "--batch-prompts", "1",
                  "--limit", "2", "--seed", "5", "--temperature", "0.6", "--out", str(out)])
    assert loaded == [("T", "torch.float32", "cpu")]  # fp32 on a CPU (--dtype auto), on this rank's device
    assert seen == [("M:T", None, 4, 0.6, 0.95, 8192, 5, [0], 0, True),  # --seed for every batch, keys the positions
                    ("M:T", None, 4, 0.6, 0.95, 8192, 5, [1], 0, True)]
    assert [r["response"] for r in data.load_jsonl(out, required=("prompt", "response"))] == ["long \\boxed{2}"]
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    assert stats["prompts"] == 2 and stats["kept"] == 1 and stats["model"] == "T" and stats["command"] == "reject"
    assert "kept 1 responses for 1 prompts" in capsys.readouterr().out
    assert not os.path.exists(f"{out}.partial")


def fake_teacher(monkeypatch, calls, stop_at=None):
    """A teacher whose samples for prompt "i+1" (at position key) answer i+1 when seed + key is odd; generate raises
    KeyboardInterrupt at call `stop_at` (an interruption, after earlier batches finished)."""
    def generate(model, tok, prompts, n, temperature, top_p, max_new_tokens, seed, keys, batch_size, progress):
        if len(calls) + 1 == stop_at:
            raise KeyboardInterrupt
        calls.append((seed, list(keys)))
        return [[Sample(text=f"\\boxed{{{int(p.split('+')[0]) + 1 if (seed + key) % 2 else 0}}}", token_ids=[1, 2],
                        finish_reason="eos") for _ in range(n)] for p, key in zip(prompts, keys)]
    fake_model(monkeypatch, generate)


@pytest.fixture
def prompt_file(tmp_path):
    return write_rows(tmp_path / "p.jsonl", [{"problem": f"{i}+1", "answer": str(i + 1)} for i in range(3)])


def test_reject_checks_arguments_before_touching_an_existing_out(tmp_path, prompt_file, monkeypatch, capsys):
    out = tmp_path / "sft.jsonl"
    out.write_text("precious\n")
    fake_teacher(monkeypatch, calls := [])
    for bad in (["--n", "0"], ["--prompts", str(tmp_path / "missing.jsonl")], ["--batch-prompts", "0"],
                ["--limit", "0"], ["--max-per-prompt", "-1"], ["--prompts", str(out)]):
        with pytest.raises(SystemExit) as e:
            distill.main(["reject", "--teacher", "T", "--prompts", prompt_file, "--out", str(out)] + bad)
        assert e.value.code == 2 and out.read_text() == "precious\n" and calls == []
    assert sorted(os.listdir(tmp_path)) == ["p.jsonl", "sft.jsonl"]


def test_reject_resumes_after_an_interruption(tmp_path, prompt_file, monkeypatch, capsys):
    argv = ["reject", "--teacher", "T", "--prompts", prompt_file, "--n", "2", "--batch-prompts", "1", "--seed", "5"]
    fake_teacher(monkeypatch, calls := [])
    distill.main(argv + ["--out", str(tmp_path / "ref.jsonl")])  # uninterrupted: the reference
    assert calls == [(5, [0]), (5, [1]), (5, [2])]
    out = tmp_path / "sft.jsonl"
    out.write_text("old\n")
    fake_teacher(monkeypatch, calls := [], stop_at=3)
    with pytest.raises(KeyboardInterrupt):  # stopped in the third batch
        distill.main(argv + ["--out", str(out)])
    assert out.read_text() == "old\n" and len(Path(f"{out}.partial").read_text().splitlines()) == 3  # header + 2
    with open(f"{out}.partial", "a") as f:
        f.write('{"start": 2, "recor')  # killed in the middle of a line
    fake_teacher(monkeypatch, calls := [])
    for other in (argv[:-1] + ["6"], ["construct", "--model", "T", "--prompts", prompt_file]):
        with pytest.raises(SystemExit) as e:  # other arguments, another sub-command: refused, nothing touched
            distill.main(other + ["--out", str(out)])
        assert e.value.code == 2 and out.read_text() == "old\n" and calls == []
    err = capsys.readouterr().err
    assert "--seed: 5 -> 6" in err and "unfinished `distill.py reject` run" in err
    fake_teacher(monkeypatch, calls := [])
    distill.main(argv + ["--batch-prompts", "2", "--out", str(out)])  # another batch size may resume it
    assert calls == [(5, [2])]  # only the unfinished prompt, with the draws it would have had
    assert "resuming after 2 of 3 prompts" in capsys.readouterr().out
    assert out.read_text() == (tmp_path / "ref.jsonl").read_text() != ""
    ref_stats = json.loads(Path(f"{tmp_path / 'ref.jsonl'}.stats.json").read_text())
    assert json.loads(Path(f"{out}.stats.json").read_text()) == ref_stats and ref_stats["kept"] == 2
    assert not os.path.exists(f"{out}.partial")


# ---------------------------------------------------------------------------------------------------------
# batches over ranks
# ---------------------------------------------------------------------------------------------------------

def test_run_batches_splits_each_batch_over_ranks_and_merges_in_order(monkeypatch):
    """Rank 0 of 2 runs positions 0, 2 of the batch 0..3 and 4 of the batch 4; the other rank's records come from
    the gather; rank 0 gets every record in row order (and so does on_batch)."""
    ran, batches = [], []
    fn = lambda pos: [{"p": p} for p in pos]  # noqa: E731
    monkeypatch.setattr(dist, "world", lambda: 2)
    monkeypatch.setattr(dist, "rank", lambda: 0)

    def gather(obj):  # rank 1's share of the same batch (positions p % 2 == 1)
        ran.append([p for p, _ in obj])
        start = ran[-1][0]
        other = [p for p in range(start, min(start + 4, 5)) if p % 2 == 1]
        return [obj, list(zip(other, fn(other)))[::-1]]  # in any order: merged by position
    monkeypatch.setattr(dist, "gather_objects", gather)
    records = distill.run_batches(fn, 5, 4, on_batch=batches.append)
    assert ran == [[0, 2], [4]]
    assert records == [{"p": p} for p in range(5)]
    assert batches == [{"start": 0, "records": [{"p": p} for p in range(4)]}, {"start": 4, "records": [{"p": 4}]}]
    done = [batches[0]]
    ran.clear()
    assert distill.run_batches(fn, 5, 4, done=done) == records and ran == [[4]]  # resumed: only the rest runs
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(dist, "gather_objects", lambda obj: None)
    assert distill.run_batches(fn, 5, 4) is None  # only rank 0 holds the records


# ---------------------------------------------------------------------------------------------------------
# construct: the state machine, the parsers, the pipeline
# ---------------------------------------------------------------------------------------------------------

def state_after(actions, **kw):
    s = distill.new_state("p", **kw)
    s["actions"] = list(actions)
    return s


@pytest.mark.parametrize("last, outcome, current, n_before, want", [
    (None, None, None, 0, "clarify"),
    ("clarify", "ok", None, 0, "decompose"),
    ("decompose", "ok", "g", 1, "solution_step"),
    ("solution_step", "ok", "g", 2, "reflection"),
    ("reflection", "solved", None, 3, "answer"),
    ("reflection", "verified", None, 3, "decompose"),  # the next subgoal of the main goal
    ("reflection", "rejected", "g2", 3, "solution_step"),  # the new (or the same) goal, revisited
    ("reflection", "rejected", None, 3, "decompose"),  # every option for the goal spent: a fresh subgoal
    ("answer", "boxed", None, 4, None),  # the end
    ("answer", "no_box", None, 19, None),
    ("decompose", "ok", "g", 19, "answer"),  # 19 actions of at most 20: the last one is the answer
    ("reflection", "rejected", "g", 19, "answer"),
    ("clarify", "ok", None, 18, "decompose"),
])
def test_next_action_transitions(last, outcome, current, n_before, want):
    s = state_after(["x"] * n_before, max_actions=20)
    s["current"] = current
    assert distill.next_action(last, outcome, s) == want


def test_next_action_refuses_an_unknown_action():
    with pytest.raises(ValueError, match="unknown action 'ponder'"):
        distill.next_action("ponder", "ok", state_after([]))


def test_parsers():
    assert distill.parse_clarify("<clarification>\n We need x. \n</clarification>\n<goal>Find x.</goal>") == \
        {"thought": "We need x.", "goal": "Find x."}
    assert distill.parse_clarify("no tags <goal>") == {"thought": "no tags", "goal": None}  # untagged: used as is
    d = distill.parse_decompose("<thinking>hmm</thinking><sentence>Maybe a.</sentence>\n<sentence> </sentence>"
                                "<sentence>Alternatively, b.</sentence>")
    assert d == {"thought": "Maybe a. Alternatively, b.", "subgoals": ["Maybe a.", "Alternatively, b."]}
    assert distill.parse_decompose("just text, x<y>z") == {"thought": "just text, x<y>z", "subgoals": []}

    def refl(cur, par, new="", ver="Check: 3-1 = 2."):
        return (f"<verification>{ver}</verification><current_goal_achieved> {cur} </current_goal_achieved>"
                f"<parent_goal_achieved>{par}</parent_goal_achieved><new_goal>{new}</new_goal>")
    assert distill.parse_reflection(refl("true", "true")) == {"outcome": "solved", "thought": "Check: 3-1 = 2.",
                                                              "new_goal": None}
    assert distill.parse_reflection(refl("True.", "false", "Alternatively, x."))["outcome"] == "verified"
    assert distill.parse_reflection(refl("false", "false", "Alternatively, use y.")) == {
        "outcome": "rejected", "thought": "Check: 3-1 = 2.\nAlternatively, use y.",
        "new_goal": "Alternatively, use y."}
    assert distill.parse_reflection(refl("false", "true"))["outcome"] == "rejected"  # a wrong step solves nothing
    assert distill.parse_reflection(refl("maybe", "maybe"))["outcome"] == "rejected"  # unreadable: not built on
    assert distill.parse_reflection("rambling")["outcome"] == "rejected"
    assert distill.parse_reflection(refl("", "true"))["outcome"] == "solved"  # no verdict on the step, goal reached
    assert distill.parse_answer("So the final answer is $\\boxed{\\frac{1}{2}}$.") == {
        "outcome": "boxed", "thought": "So the final answer is $\\boxed{\\frac{1}{2}}$.", "answer": "\\frac{1}{2}"}
    assert distill.parse_answer("\\boxed{}")["outcome"] == "no_box"
    assert distill.parse_answer("it is 2")["outcome"] == "no_box"


def reflection(cur, par, new=""):
    return (f"<verification>ok?</verification><current_goal_achieved>{cur}</current_goal_achieved>"
            f"<parent_goal_achieved>{par}</parent_goal_achieved><new_goal>{new}</new_goal>")


def test_advance_keeps_the_goals():
    s = distill.new_state("What is x?", max_tries=1)
    assert distill.advance(s, "clarify", "<clarification>c</clarification><goal>Find x.</goal>") == "ok"
    assert s["goal"] == "Find x." and s["thoughts"] == ["c"]
    distill.advance(s, "decompose", "<sentence>A.</sentence><sentence>Alternatively, B.</sentence>"
                                    "<sentence>Alternatively, C.</sentence>")
    assert (s["current"], s["alternatives"]) == ("A.", ["Alternatively, B.", "Alternatively, C."])
    distill.advance(s, "solution_step", "step 1")
    assert s["prior_step"] == "step 1"
    assert distill.advance(s, "reflection", reflection("false", "false")) == "rejected"
    assert (s["current"], s["tries"], s["abandoned"]) == ("A.", 1, [])  # the same goal, revisited
    assert distill.advance(s, "reflection", reflection("false", "false")) == "rejected"
    assert (s["current"], s["tries"], s["abandoned"]) == ("Alternatively, B.", 0, ["A."])  # decompose's alternative
    assert distill.advance(s, "reflection", reflection("false", "false", "Alternatively, D.")) == "rejected"
    assert (s["current"], s["abandoned"]) == ("Alternatively, D.", ["A.", "Alternatively, B."])  # the new goal
    assert distill.advance(s, "reflection", reflection("true", "false")) == "verified"
    assert (s["current"], s["done"], s["alternatives"]) == (None, ["Alternatively, D."], [])
    assert s["rejected"] == 3 and not s["solved"]
    distill.advance(s, "decompose", "<sentence>E.</sentence>")
    distill.advance(s, "reflection", reflection("false", "false"))
    distill.advance(s, "reflection", reflection("false", "false"))
    assert s["current"] is None and s["abandoned"][-1] == "E."  # no alternative left: give the goal up
    assert distill.next_action("reflection", "rejected", s) == "decompose"
    distill.advance(s, "decompose", "nothing useful")  # no subgoal proposed: work on the main goal itself
    assert s["current"] == "Find x."
    assert distill.advance(s, "reflection", reflection("true", "true")) == "solved" and s["solved"]
    assert distill.advance(s, "answer", "\\boxed{7}") == "boxed" and s["answer"] == "7"
    assert s["actions"] == ["clarify", "decompose", "solution_step"] + ["reflection"] * 4 + ["decompose"] + \
        ["reflection"] * 2 + ["decompose", "reflection", "answer"]


# A scripted short-CoT model: per problem, per action, the outputs in the order they are asked for.
SCRIPT = {
    "1+1": {  # a rejected step, its new goal, a verified subgoal, the main goal revisited, solved, answered
        "clarify": ["<clarification>Add one and one.</clarification><goal>Find 1+1.</goal>"],
        "decompose": ["<thinking>t</thinking><sentence>Maybe count on from 1.</sentence>"
                      "<sentence>Alternatively, use a number line.</sentence>",
                      "<sentence>Maybe state the sum.</sentence>"],
        "solution_step": ["1+1 = 3.", "Counting on: 1, 2. So 1+1 = 2.", "The sum is 2."],
        "reflection": [reflection("false", "false", "Alternatively, add the units directly."),
                       reflection("true", "false"), reflection("true", "true")],
        "answer": ["So the final answer is \\boxed{2}."],
    },
    "2+2": {  # no verdict twice: the same goal revisited, then solved with a wrong answer (dropped by the verifier)
        "clarify": ["<clarification>Add two and two.</clarification><goal>Find 2+2.</goal>"],
        "decompose": ["<sentence>Maybe add.</sentence>", "<sentence>Maybe add again.</sentence>"],
        "solution_step": ["2+2 = 5.", "2+2 = 5 again.", "Still 5."],
        "reflection": ["hmm", "hmm", reflection("true", "true")],
        "answer": ["So the final answer is \\boxed{5}."],
    },
    "3+3": {  # an action cut off by the token limit: the trace ends there
        "clarify": ["<clarification>Add three and three.</clarification><goal>Find 3+3.</goal>"],
        "decompose": [("<sentence>Maybe add and add and", "length")],
    },
    "4+4": {  # never verified: the budget forces the answer, which has no box
        "clarify": ["<clarification>c</clarification><goal>Find 4+4.</goal>"],
        "decompose": ["<sentence>Maybe add.</sentence>"] * 3,
        "solution_step": ["4+4 = 9."] * 9,
        "reflection": [reflection("false", "false")] * 9,
        "answer": ["It is eight."],
    },
}


ASKS = {"clarify": "Before solving anything", "decompose": "Propose the next subgoal",
        "solution_step": "Carry out the current subgoal", "reflection": "Check whether its last step",
        "answer": "State the final answer"}


def action_of(prompt):
    """Which action a prompt asks for (by a phrase of its instruction)."""
    found = [a for a, phrase in ASKS.items() if phrase in prompt]
    assert len(found) == 1, prompt
    return found[0]


def scripted(calls, script=SCRIPT, fail_at=None):
    """generate_fn for construct: each (problem, action) answers its scripted outputs in turn; records every call
    as (action, problems, keys, turn, max_new_tokens); raises KeyboardInterrupt on call `fail_at`."""
    used = {}

    def generate(prompts, n, keys, turn=0, max_new_tokens=None):
        assert n == 1
        if fail_at is not None and len(calls) + 1 == fail_at:
            raise KeyboardInterrupt
        actions = {action_of(p) for p in prompts}
        assert len(actions) == 1, actions  # one kind of action per call
        action = actions.pop()
        problems = [re.search(r"<problem>\n(.*?)\n</problem>", p, re.S).group(1) for p in prompts]
        calls.append((action, problems, list(keys), turn, max_new_tokens))
        out = []
        for prob, key in zip(problems, keys):
            i = used[prob, key, action] = used.get((prob, key, action), -1) + 1
            text = script[prob][action][i]
            out.append([S(*text) if isinstance(text, tuple) else S(text)])
        return out
    return generate


def construct_rows():
    return [{"id": str(k), "problem": p, "answer": str(2 * (k + 1))} for k, p in enumerate(SCRIPT)]


def test_construct_end_to_end_with_a_scripted_model():
    calls = []
    kept, stats = distill.construct(scripted(calls), construct_rows(), 1, grade_fn=exact_grader, max_actions=12,
                                    max_tries=1, action_tokens=100, answer_tokens=20, batch_prompts=4)
    want = ("Add one and one.\n\n"
            "Maybe count on from 1. Alternatively, use a number line.\n\n"
            "1+1 = 3.\n\n"
            "ok?\nAlternatively, add the units directly.\n\n"
            "Counting on: 1, 2. So 1+1 = 2.\n\n"
            "ok?\n\n"
            "Maybe state the sum.\n\n"
            "The sum is 2.\n\n"
            "ok?\n\n"
            "So the final answer is \\boxed{2}.")
    assert kept == [{"id": "0", "problem": "1+1", "answer": "2", "prompt": data.format_prompt("1+1"),
                     "response": want, "actions": ["clarify", "decompose", "solution_step", "reflection",
                                                   "solution_step", "reflection", "decompose", "solution_step",
                                                   "reflection", "answer"]}]
    # the calls: one per kind of action per turn, keys = position * n + trace, turn = the action's index
    assert calls[:3] == [("clarify", list(SCRIPT), [0, 1, 2, 3], 0, 100),
                         ("decompose", list(SCRIPT), [0, 1, 2, 3], 1, 100),
                         ("solution_step", ["1+1", "2+2", "4+4"], [0, 1, 3], 2, 100)]
    assert [c for c in calls if c[0] == "answer"] == [("answer", ["1+1", "2+2"], [0, 1], 9, 20),
                                                      ("answer", ["4+4"], [3], 11, 20)]
    assert max(c[3] for c in calls) == 11  # max_actions 12: the 4+4 trace answers at its 12th action
    assert stats["outcomes"] == {"kept": 1, "wrong": 1, "no_box": 1, "truncated": 1}
    assert stats["actions"] == {"clarify": 4, "decompose": 2 + 2 + 1 + 2, "solution_step": 3 + 3 + 4,
                                "reflection": 3 + 3 + 4, "answer": 3}
    assert stats["rejected_steps"] == 1 + 2 + 4 and stats["forced_answers"] == 1  # only 4+4's answer was forced
    assert (stats["kept"], stats["prompts_with_kept"], stats["traces"]) == (1, 1, 4)
    assert stats["mean_actions"] == (10 + 10 + 2 + 12) / 4 and stats["mean_kept_chars"] == len(want)
    assert stats["pass_rate_hist"]["0"] == 3 and stats["pass_rate_hist"]["(0.9,1.0]"] == 1


def test_construct_prompts_carry_the_state():
    """What each action is shown: the main goal, the current subgoal (after a rejection: the new one), the work so
    far, the previous step, the subgoals done and abandoned."""
    prompts = {}

    def generate(ps, n, keys, turn=0, max_new_tokens=None):
        for p in ps:
            prompts.setdefault(action_of(p), []).append(p)
        return inner(ps, n, keys, turn, max_new_tokens)
    inner = scripted([])
    distill.construct(generate, construct_rows()[:1], 1, grade_fn=exact_grader)
    step2 = prompts["solution_step"][1]
    assert "<current subgoal>\nAlternatively, add the units directly.\n</current subgoal>" in step2
    assert "<previous step>\n1+1 = 3.\n</previous step>" in step2 and "Add one and one." in step2
    refl3 = prompts["reflection"][2]
    assert "<main goal>\nFind 1+1.\n</main goal>" in refl3 and "<current subgoal>\nMaybe state the sum." in refl3
    assert "<subgoals done>\n- Alternatively, add the units directly.\n</subgoals done>" in refl3
    assert "<subgoals abandoned>\n- Maybe count on from 1.\n</subgoals abandoned>" in refl3
    assert "<subgoals done>\n(none)\n</subgoals done>" in prompts["decompose"][0]
    assert "The sum is 2.\n\nok?\n</reasoning>" in prompts["answer"][0]


def test_construct_reflection_model_and_chat_template():
    """--reflect-model: the reflection prompts go to its generate_fn, in its tokenizer's chat template."""
    class Tok:
        def __init__(self, tag):
            self.chat_template, self.tag = "x", tag

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return f"[{self.tag}]{messages[0]['content']}[/{self.tag}]"
    main_calls, refl_calls = [], []
    main, refl = scripted(main_calls), scripted(refl_calls)
    seen = []

    def spy(fn, who):
        def g(ps, n, keys, turn=0, max_new_tokens=None):
            seen.extend((who, p[:6]) for p in ps)
            return fn(ps, n, keys, turn, max_new_tokens)
        return g
    kept, _ = distill.construct(spy(main, "main"), construct_rows()[:1], 1, reflect_fn=spy(refl, "refl"),
                                tokenizer=Tok("m"), reflect_tokenizer=Tok("r"), grade_fn=exact_grader)
    assert {c[0] for c in refl_calls} == {"reflection"} and len(refl_calls) == 3
    assert "reflection" not in {c[0] for c in main_calls}
    assert {s for s in seen if s[0] == "refl"} == {("refl", "[r]You")}
    assert {s for s in seen if s[0] == "main"} == {("main", "[m]You"), ("main", "[m]Bel")}
    assert kept[0]["prompt"] == "[m]1+1\nPlease reason step by step, and put your final answer within \\boxed{}.[/m]"


def test_construct_resumes_from_finished_batches():
    ref, _ = distill.construct(scripted([]), construct_rows(), 1, grade_fn=exact_grader, max_actions=12,
                               max_tries=1, batch_prompts=2)
    batches, calls = [], []
    with pytest.raises(KeyboardInterrupt):  # the second batch's clarify call fails
        distill.construct(scripted(calls, fail_at=11), construct_rows(), 1, grade_fn=exact_grader,
                          max_actions=12, max_tries=1, batch_prompts=2, on_batch=batches.append)
    assert len(batches) == 1 and len(calls) == 10  # the first batch (1+1, 2+2) took 10 turns
    batches = json.loads(json.dumps(batches))  # as read back from OUT.partial
    calls = []
    kept, stats = distill.construct(scripted(calls), construct_rows(), 1, grade_fn=exact_grader, max_actions=12,
                                    max_tries=1, batch_prompts=2, done=batches)
    assert kept == ref and stats["traces"] == 4 and stats["outcomes"]["kept"] == 1
    assert {p for c in calls for p in c[1]} == {"3+3", "4+4"} and calls[0][2] == [2, 3]


def test_construct_several_traces_per_prompt_draw_their_own_keys():
    calls = []
    script = {"1+1": {k: v * 2 for k, v in SCRIPT["1+1"].items()}}
    kept, stats = distill.construct(scripted(calls, script), [{"problem": "1+1", "answer": "2"}], 2,
                                    grade_fn=exact_grader, max_per_prompt=None)
    assert calls[0][2] == [0, 1] and len(kept) == 2 and stats["pass_rate_hist"]["(0.9,1.0]"] == 1
    kept1, _ = distill.construct(scripted([], script), [{"problem": "1+1", "answer": "2"}], 2, grade_fn=exact_grader)
    assert len(kept1) == 1  # --max-per-prompt 1


# ---------------------------------------------------------------------------------------------------------
# extract and filter
# ---------------------------------------------------------------------------------------------------------

WEB = [{"id": "w0", "problem": "What is 2+3?", "solution": "2+3=5, so 5."},
       {"id": "w1", "problem": "Prove that sqrt 2 is irrational.", "solution": "Suppose p/q ... contradiction."},
       {"id": "w2", "problem": "Is 7 prime?", "solution": "It has no divisors but 1 and 7."},
       {"id": "w3", "problem": "Half of 1?", "solution": "0.5"},
       {"id": "w4", "problem": "Name it.", "solution": "It is x."}]
EXTRACTED = {"What is 2+3?": S("The final answer is $\\boxed{5}$."),
             "Prove that sqrt 2 is irrational.": S("The final answer is $\\boxed{}$."),
             "Is 7 prime?": S("The final answer is $\\boxed{True}$ and more", "length"),
             "Half of 1?": S("First $\\boxed{1}$, no: the final answer is $\\boxed{\\frac{1}{2}}$."),
             "Name it.": S("I cannot tell.")}


def extractor(calls):
    def generate(prompts, n, keys, **kw):
        calls.append((prompts, keys))
        return [[EXTRACTED[re.search(r"Problem: (.*)\n\nSolution", p).group(1)]] for p in prompts]
    return generate


def test_extract_keeps_rows_with_a_nonempty_box():
    calls = []
    kept, stats = distill.extract(extractor(calls), WEB, batch_prompts=3)
    assert kept == [{"id": "w0", "problem": "What is 2+3?", "answer": "5", "solution": "2+3=5, so 5.",
                     "kind": "math"},
                    {"id": "w2", "problem": "Is 7 prime?", "answer": "True",
                     "solution": "It has no divisors but 1 and 7.", "kind": "math"},
                    {"id": "w3", "problem": "Half of 1?", "answer": "\\frac{1}{2}", "solution": "0.5",
                     "kind": "math"}]
    assert stats == {"rows_in": 5, "extracted": 3, "empty_box": 1, "no_box": 1, "truncated": 1, "kept": 3}
    assert [c[1] for c in calls] == [[0, 1, 2], [3, 4]]
    prompt = calls[0][0][0]
    assert "Problem: What is 2+3?\n\nSolution: 2+3=5, so 5.\n" in prompt and "\\boxed{}" in prompt
    assert "$\\boxed{\\frac{1}{2}}$" in prompt and "{{" not in prompt


def test_load_web_rows_maps_the_keys(tmp_path):
    p = write_rows(tmp_path / "w.jsonl", [{"question": "q", "answer": "a", "id": "7"},
                                          {"question": "r", "answer": "b"}])
    assert distill.load_web_rows(p, "question", "answer") == [{"id": "7", "problem": "q", "solution": "a"},
                                                              {"id": "1", "problem": "r", "solution": "b"}]
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a"}\n\n{"question": 3, "answer": "a"}\n')
    with pytest.raises(data.DataError, match=r"bad.jsonl:3: key 'question' should be str, got int"):
        distill.load_web_rows(str(tmp_path / "bad.jsonl"), "question", "answer")


TEACHER = {  # problem -> 2 samples
    "What is 2+3?": [S("\\boxed{6}"), S("so \\boxed{5}")],  # one agrees: kept
    "Is 7 prime?": [S("\\boxed{False}"), S("\\boxed{No}")],  # none: dropped
    "Half of 4?": [S("\\boxed{2}", "length"), S("\\boxed{1}")],  # the agreeing one is cut off: dropped
    "Cube of 2?": [S("a \\boxed{8}"), S("b \\boxed{8}")],  # both
}
FILTER_ROWS = [{"id": "w0", "problem": "What is 2+3?", "answer": "5", "solution": "s0", "kind": "math"},
               {"id": "w2", "problem": "Is 7 prime?", "answer": "True", "solution": "s2", "kind": "math"},
               {"id": "w3", "problem": "Half of 4?", "answer": "2", "solution": "s3", "kind": "math"},
               {"id": "w5", "problem": "Cube of 2?", "answer": "8", "solution": "s5", "kind": "math"}]


def teacher(prompts, n, keys, **kw):
    return [TEACHER[p.split("\n")[0]][:n] for p in prompts]


def test_filter_keeps_rows_where_a_sample_agrees():
    prompts, sft, stats = distill.agreement_filter(teacher, FILTER_ROWS, 2, grade_fn=exact_grader)
    assert prompts == [FILTER_ROWS[0] | {"n_match": 1}, FILTER_ROWS[3] | {"n_match": 2}]
    assert [(r["id"], r["response"]) for r in sft] == [("w0", "so \\boxed{5}"), ("w5", "a \\boxed{8}"),
                                                       ("w5", "b \\boxed{8}")]
    assert (stats["rows_in"], stats["rows_kept"], stats["accepted"], stats["truncated"], stats["kept"]) == \
        (4, 2, 3, 1, 3)
    _, sft1, _ = distill.agreement_filter(teacher, FILTER_ROWS, 2, max_per_prompt=1, grade_fn=exact_grader)
    assert [r["response"] for r in sft1] == ["so \\boxed{5}", "a \\boxed{8}"]
    none, _, stats1 = distill.agreement_filter(teacher, FILTER_ROWS, 1, grade_fn=exact_grader)  # k = 1
    assert [r["id"] for r in none] == ["w5"] and stats1["samples"] == 4


def test_filter_cli_outputs_load_in_ppo_and_sft(tmp_path, monkeypatch, capsys):
    """The prompt file passes ppo.py's checks and loader, the SFT file sft.py's."""
    import ppo
    import sft

    def generate(model, tok, prompts, n, temperature, top_p, max_new_tokens, seed, keys, batch_size, progress):
        return teacher(prompts, n, keys)
    fake_model(monkeypatch, generate)
    src = write_rows(tmp_path / "ex.jsonl", FILTER_ROWS)
    out, sft_out = tmp_path / "prompts.jsonl", tmp_path / "sft.jsonl"
    distill.main(["filter", "--teacher", "T", "--prompts", src, "--out", str(out), "--sft-out", str(sft_out)])
    assert "wrote 2 rows to" in capsys.readouterr().out
    assert json.loads(Path(f"{out}.stats.json").read_text())["rows_kept"] == 2
    monkeypatch.undo()  # the real model, sample and verify modules again
    rows = ppo.load_prompt_rows(str(out), 0, 0, "train")
    assert [(r["problem"], r["answer"], r["kind"]) for r in rows] == [("What is 2+3?", "5", "math"),
                                                                       ("Cube of 2?", "8", "math")]
    _, kept, prompts, _ = ppo.check_args(ppo.parse_args(["--prompts", str(out), "--rollout-batch", "2",
                                                         "--out", str(tmp_path / "ppo")]))
    assert [r["id"] for r in kept] == ["w0", "w5"] and prompts[0].startswith("What is 2+3?")
    args = sft.parse_args(["--data", str(sft_out), "--batch-size", "1", "--micro-batch-size", "1",
                           "--out", str(tmp_path / "sft")])
    sft.check_args(args)
    import model as M
    _, tok = M.load("tiny", device="meta")
    assert [r["response"] for r in sft.load_train_rows(args, tok)] == ["so \\boxed{5}", "a \\boxed{8}",
                                                                      "b \\boxed{8}"]


# ---------------------------------------------------------------------------------------------------------
# the import circle, the tiny model through sample.py
# ---------------------------------------------------------------------------------------------------------

def test_data_py_never_imports_the_sampler():
    """data.py <-> sample.py was an import circle (data.py's distill imported sample.py): not even a lazy import."""
    tree = ast.parse((Path(ROOT) / "data.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "sample" not in imported and "model" not in imported and "dist" in imported  # (the test can fail)


def simulate_ranks(run, world=2):
    """run() as every rank of `world` in turn in this process: rank r > 0 first (its gathered shares are kept),
    then rank 0, whose gathers return those shares. Returns rank 0's result (the ranks share nothing else)."""
    shares = {}
    with pytest.MonkeyPatch.context() as mp:
        for r in list(range(1, world)) + [0]:
            mp.setattr(dist, "rank", lambda r=r: r)
            mp.setattr(dist, "world", lambda: world)
            calls = iter(range(10 ** 6))

            def gather(obj, r=r):
                i = next(calls)
                if r:
                    shares[r, i] = obj
                    return None
                return [obj] + [shares[q, i] for q in range(1, world)]
            mp.setattr(dist, "gather_objects", gather)
            result = run()
    return result


def test_tiny_model_two_simulated_ranks_draw_what_one_process_draws(monkeypatch):
    """The real sampler (model.load + sample.generate through load_generate) on the tiny model: split over two
    (simulated) ranks, every prompt, trace and action gets the very same sampled text as in one process, and the
    outputs and counts are equal. The ranks batch different prompts together, so this also checks that a draw
    depends on (seed, key, turn) only. The random model rarely samples EOS: vowels and "." also stop a response
    here, so that its actions end and its traces run through the state machine."""
    import torch

    import sample
    real_stops = sample.stop_ids
    monkeypatch.setattr(sample, "stop_ids", lambda m, t: sorted(set(real_stops(m, t)) |
                                                                {t.convert_tokens_to_ids(c) for c in "aeiou."}))
    rows = [{"id": str(i), "problem": f"{i}+{i}=?", "answer": str(2 * i), "kind": "math"} for i in range(5)]
    flags = types.SimpleNamespace(temperature=1.0, top_p=0.95, seed=3, kv_slots=0, max_new_tokens=12)

    def run(log):
        generate, tok = distill.load_generate("tiny", flags, "cpu", torch.float32, False)

        def logged(prompts, n, keys, turn=0, max_new_tokens=None):
            out = generate(prompts, n, keys, turn, max_new_tokens)
            for p, k, samples in zip(prompts, keys, out):
                for j, s in enumerate(samples):
                    log[p, k, turn, j] = (s.text, s.finish_reason)
            return out
        kept, stats = distill.reject(logged, rows, 3, tokenizer=tok, batch_prompts=4)
        built, cstats = distill.construct(logged, rows, 2, tokenizer=tok, max_actions=5, action_tokens=24,
                                          answer_tokens=24, batch_prompts=4)
        return kept, stats, built, cstats

    one, two = {}, {}
    want = run(one)
    got = simulate_ranks(lambda: run(two))
    assert got == want and two == one
    assert sum(k[0].endswith("Answer in \\boxed{}.\n") for k in one) == 5 * 3  # reject's samples
    assert min(want[3]["actions"].values()) > 0  # some traces ran every action (the draws that end them)


def tiny_inputs(tmp_path):
    web = write_rows(tmp_path / "web.jsonl", [{"question": r["problem"], "answer": r["solution"]} for r in WEB[:3]])
    prompts = write_rows(tmp_path / "p.jsonl", FILTER_ROWS[:3])
    return web, prompts


def test_tiny_model_runs_every_subcommand_one_process_and_torchrun(tmp_path):
    """The real model.load + sample.generate + verify.py on the tiny (random) model: plumbing only, nothing is
    expected to be kept, but every stage runs and reports its counts. Under torchrun (2 ranks, each batch's
    prompts split over them) rank 0 writes the same outputs and counts as one process: each draw depends on the
    prompt's position (and trace and turn), not on the rank."""
    web, prompts = tiny_inputs(tmp_path)
    small = ["--max-new-tokens", "8", "--batch-prompts", "2"]
    runs = {"reject": ["--teacher", "tiny", "--prompts", prompts, "--n-samples", "2"] + small,
            "construct": ["--model", "tiny", "--prompts", prompts, "--n-samples", "2", "--action-tokens", "3",
                          "--answer-tokens", "3", "--max-actions", "6", "--batch-prompts", "2"],
            "extract": ["--model", "tiny", "--data", web, "--question-key", "question", "--solution-key", "answer"]
            + small,
            "filter": ["--teacher", "tiny", "--prompts", prompts, "--n-samples", "2"] + small}
    st, procs = {}, {}
    for cmd, flags in runs.items():  # the four at once (a few seconds each, mostly imports)
        extra = ["--sft-out", str(tmp_path / "filter_sft.jsonl")] if cmd == "filter" else []
        procs[cmd] = subprocess.Popen([sys.executable, "distill.py", cmd] + flags + extra +
                                      ["--out", str(tmp_path / f"{cmd}.jsonl")], cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      env=dict(os.environ, OMP_NUM_THREADS="1"))
    for cmd in runs:
        out = tmp_path / f"{cmd}.jsonl"
        stdout, stderr = procs[cmd].communicate(timeout=300)
        assert procs[cmd].returncode == 0, stdout[-2000:] + stderr[-3000:]
        assert f"rows to {out}" in stdout
        st[cmd] = json.loads(Path(f"{out}.stats.json").read_text())
        assert st[cmd]["command"] == cmd and st[cmd]["model"] == "tiny"
        assert len(data.load_jsonl(out, required=())) == st[cmd]["rows_kept" if cmd == "filter" else "kept"]
        assert not os.path.exists(f"{out}.partial")
    assert st["reject"]["samples"] == 6 and st["filter"]["samples"] == 6 and st["filter"]["rows_in"] == 3
    assert st["construct"]["traces"] == 6 and st["construct"]["actions"]["clarify"] == 6
    assert sum(st["construct"]["outcomes"].values()) == 6
    assert st["extract"]["rows_in"] == 3 and \
        st["extract"]["extracted"] + st["extract"]["empty_box"] + st["extract"]["no_box"] == 3
    assert len(data.load_jsonl(tmp_path / "filter_sft.jsonl", required=())) == st["filter"]["kept"]
    for cmd in ("construct",):  # under torchrun (the draws' rank invariance: the simulated-ranks test above)
        two = tmp_path / f"{cmd}2.jsonl"
        run_script("distill.py", [cmd] + runs[cmd] + ["--out", str(two)], torchrun=True)
        assert two.read_text() == (tmp_path / f"{cmd}.jsonl").read_text()
        assert json.loads(Path(f"{two}.stats.json").read_text()) == st[cmd]
        assert not os.path.exists(f"{two}.partial")
