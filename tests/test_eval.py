"""eval.py: reflection-word counts, the summary table, the CLI on the classroom task (one process and torchrun),
training-curve plots."""
import json
import math
import subprocess
import sys

import pytest

import eval as E
from scripts import run_script


def test_reflection_counts_whole_words_case_insensitive():
    text = "Wait, let me recheck. Waiting is not a reflection; however, TRY  AGAIN. Alternatively retry. rethink"
    c = E.reflection_counts(text)
    assert c == {"wait": 1, "recheck": 1, "retry": 1, "alternatively": 1, "however": 1, "rethink": 1, "try again": 1}
    assert sum(E.reflection_counts("no reflection here").values()) == 0


def test_format_table():
    t = E.format_table({"math500": {"n": 500, "accuracy": 0.5, "accuracy_se": 0.0224, "mean_length": 812.4,
                                    "truncation_rate": 0.03, "reflections_per_response": 1.25}})
    assert "math500" in t and "50.0 +- 2.2" in t and "812" in t and "3.0%" in t and "1.25" in t


def test_cli_classroom_writes_samples_and_summary(tmp_path):
    r = subprocess.run([sys.executable, "eval.py", "--model", "tiny", "--benchmarks", "classroom", "--limit", "5",
                        "--n", "2", "--max-new-tokens", "12", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "classroom.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(row["num_tokens"] <= 12 for row in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())["results"]["classroom"]
    assert summary["n"] == 10 and summary["accuracy"] == sum(row["correct"] for row in rows) / 10
    assert "classroom" in r.stdout and "accuracy" in r.stdout


def test_plot_curves(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for it in range(1, 6):
            f.write(json.dumps({"iteration": it, "accuracy": 0.1 * it, "response_length": 100 + it}) + "\n")
            if it % 2 == 0:
                f.write(json.dumps({"iteration": it, "eval/accuracy": 0.1 * it, "eval/mean_length": 90.0}) + "\n")
    train, held = E.read_curves(str(tmp_path))
    assert [t[0] for t in train] == [1, 2, 3, 4, 5] and [h[0] for h in held] == [2, 4]
    pytest.importorskip("matplotlib")
    out = E.plot_curves(str(tmp_path))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1}\n{oops\n{"step": 2}\n')  # (a bad last line: torn)
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        E.read_curves(str(tmp_path / "bad"))


def test_evaluate_counts_verified_answers_as_correct(monkeypatch):
    """A right answer counts as correct and a wrong one as wrong (the records, accuracy and its SE): the sampler is
    replaced by fixed responses, the verifier is the real one."""
    import model as M
    from sample import Sample
    net, tok = M.load("tiny")
    texts = {"2+2=?": ["so \\boxed{4}", "\\boxed{5}"], "3+3=?": ["\\boxed{6}", "\\boxed{6}"]}

    def fake_generate(model, tokenizer, prompts, n, **kw):
        return [[Sample(i, [1] * 3, [0.0] * 3, texts[p.split("\n")[0]][k], "eos") for k in range(n)]
                for i, p in enumerate(prompts)]
    monkeypatch.setattr(E, "generate", fake_generate)
    rows = [{"problem": "2+2=?", "answer": "4"}, {"problem": "3+3=?", "answer": "6"}]
    metrics, records = E.evaluate(net, tok, rows, n=2)
    assert [r["correct"] for r in records] == [True, False, True, True]
    assert metrics["accuracy"] == 0.75 and metrics["n"] == 4
    assert metrics["accuracy_se"] == pytest.approx(math.sqrt(0.0625 / 2))  # per-question 0.5, 1.0: var 0.0625, Q 2


def test_cli_under_torchrun_equals_one_process(tmp_path):
    """Two ranks split the questions; rank 0 writes one JSONL with the same samples, in the same order, as one
    process (each sample's randomness depends on its question, not its rank) and the same summary."""
    flags = ["--model", "tiny", "--benchmarks", "classroom", "--limit", "5", "--n-samples", "2", "--max-new-tokens", "12"]
    run_script("eval.py", flags + ["--out", str(tmp_path / "one")])
    run_script("eval.py", flags + ["--out", str(tmp_path / "two")], torchrun=True)
    rows = {k: (tmp_path / k / "classroom.jsonl").read_text().splitlines() for k in ("one", "two")}
    assert len(rows["one"]) == 10 and rows["one"] == rows["two"]
    assert [json.loads(r)["index"] for r in rows["two"]] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    summary = {k: json.loads((tmp_path / k / "summary.json").read_text())["results"] for k in ("one", "two")}
    assert summary["one"] == summary["two"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["classroom.jsonl", "summary.json"]


def test_accuracy_se_counts_questions_not_samples():
    # 2 questions x 2 samples: one always right, one always wrong. Per-question accuracies 1 and 0: variance 0.25,
    # SE = sqrt(0.25 / 2) = 0.354 (treating the 4 samples as independent would claim sqrt(0.25 / 4) = 0.25)
    assert E.accuracy_se(1.0, 1.0, 2) == pytest.approx(math.sqrt(0.25 / 2))
    # n = 1: the binomial formula; 3 of 4 right -> sqrt(0.75 * 0.25 / 4)
    assert E.accuracy_se(3.0, 3.0, 4) == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    # every question half right: no spread between questions -> 0
    assert E.accuracy_se(1.5, 0.75, 3) == 0.0 and E.accuracy_se(0, 0, 0) == 0.0


def test_classroom_digits_flag_sets_the_problems(tmp_path):
    """`--benchmarks classroom --digits 4` evaluates 4-digit problems (replicate.py's models), 3 by default."""
    for digits in (3, 4):
        rows = E.check_args(E.parse_args(["--benchmarks", "classroom", "--digits", str(digits), "--limit", "5",
                                          "--out", str(tmp_path / "e")]))["classroom"]
        assert len(rows) == 5
        assert all(len(r["problem"].split("+")[0]) == digits for r in rows)


def test_keyword_frequency_by_hand():
    """The paper's Sec. 6 keywords, occurrences per response over a batch (whole words, any case)."""
    texts = ["Wait, wait. However, the sum is 5.", "Let me retry. Alternatively recheck; waiting is not wait-ing",
             "no reflection"]
    f = E.keyword_frequency(texts)
    assert E.KEYWORDS == ["wait", "recheck", "alternatively", "retry", "however"]
    # wait: 2 + 1 ("wait-ing": "wait" then "-", a word boundary) + 0; the others once each in 3 responses
    assert f == pytest.approx({"wait": 3 / 3, "recheck": 1 / 3, "alternatively": 1 / 3, "retry": 1 / 3,
                               "however": 1 / 3})
    assert E.keyword_frequency([]) == {w: 0.0 for w in E.KEYWORDS}


def test_defaults_are_the_authors_evaluation_protocol(monkeypatch, tmp_path):
    """metagen's eval_reasoning_dlc.yaml: AIME 2024 over 16 samples, the other benchmarks over 4, temperature 0.7,
    top-p 0.95, 16,384 new tokens; main passes each benchmark its own count. Caught mutations: one count for every
    benchmark (main passing --n), a default of 1 sample."""
    args = E.parse_args([])
    assert (args.n, args.temperature, args.top_p, args.max_new_tokens) == (0, 0.7, 0.95, 16384)
    assert args.benchmarks.split(",") == ["math500", "aime2024", "theoremqa", "mmlu_pro_1k"]
    assert [E.samples_for(b, args.n) for b in args.benchmarks.split(",")] == [4, 16, 4, 4]
    assert E.samples_for("classroom") == 1 and E.samples_for("aime2024", 2) == 2
    import model as M
    seen = {}
    monkeypatch.setattr(E, "check_args", lambda a: {"aime2024": [{"problem": "1+1", "answer": "2"}],
                                                    "math500": [{"problem": "1+2", "answer": "3"}]})
    monkeypatch.setattr(M, "load", lambda *a, **k: (None, None))

    def fake_evaluate(net, tok, rows, n, temperature, top_p, max_new_tokens, **k):
        seen[rows[0]["answer"]] = (n, temperature, top_p, max_new_tokens)
        return {"accuracy": 0.5, "accuracy_se": 0.1, "mean_length": 1.0, "truncation_rate": 0.0,
                "reflections_per_response": 0.0, "n": n}, []
    monkeypatch.setattr(E, "evaluate", fake_evaluate)
    E.main(["--out", str(tmp_path)])
    assert seen == {"2": (16, 0.7, 0.95, 16384), "3": (4, 0.7, 0.95, 16384)}


def test_plot_draws_the_reflection_keywords_of_a_ppo_run(tmp_path):
    """A ppo.py run logs keywords/<word> per iteration: the figure gets a third panel with one line per keyword,
    their values those logged; a run without them keeps two panels."""
    pytest.importorskip("matplotlib")
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for it in range(1, 4):
            f.write(json.dumps({"iteration": it, "accuracy": 0.1, "response_length": 9.0,
                                **{f"keywords/{w}": it * (i + 1) / 10 for i, w in enumerate(E.KEYWORDS)}}) + "\n")
            f.write(json.dumps({"iteration": it, "eval/accuracy": 0.1, "eval/mean_length": 9.0}) + "\n")
    fig = E.curves_figure(str(tmp_path))
    assert len(fig.axes) == 3
    lines = {line.get_label(): line for line in fig.axes[2].get_lines()}
    assert list(lines) == E.KEYWORDS
    assert list(lines["retry"].get_xdata()) == [1, 2, 3]
    assert list(lines["retry"].get_ydata()) == pytest.approx([0.4, 0.8, 1.2])
    assert open(E.plot_curves(str(tmp_path)), "rb").read(4) == b"\x89PNG"
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "metrics.jsonl").write_text(json.dumps({"step": 1, "accuracy": 0.1, "response_length": 2}))
    assert len(E.curves_figure(str(tmp_path / "sft")).axes) == 2
