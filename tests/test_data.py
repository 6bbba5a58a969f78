"""Tests for data.py: loaders and their errors, source conversions, prompts, the classroom task (the
distillation tests moved with the code to tests/test_distill.py)."""
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import pytest

import data
from data import DataError

SHARED = Path(data.__file__).resolve().parent.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "math500.jsonl").is_file(),
                                  reason=f"../shared/data not found: {SHARED / 'math500.jsonl'}")


def boxed(text):
    """The simple rule the brief asks for: the contents of the last \\boxed{...} (no nested braces)."""
    found = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return found[-1] if found else None


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def shared_rows(name):
    return [json.loads(line) for line in (SHARED / name).read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------------------
# load_jsonl
# ---------------------------------------------------------------------------------------------------------

def test_load_jsonl_reads_rows_and_skips_blank_lines(tmp_path):
    p = write(tmp_path / "a.jsonl", '{"problem": "1+1", "answer": "2"}\n\n   \n{"problem": "x", "answer": "y", '
                                    '"options": ["a", "b"], "id": "7"}\n')
    assert data.load_jsonl(p) == [{"problem": "1+1", "answer": "2"},
                                  {"problem": "x", "answer": "y", "options": ["a", "b"], "id": "7"}]


@pytest.mark.parametrize("text, where, what", [
    ('{"problem": "a", "answer": "b"}\n{"problem": "a", "answer": \n', ":2:", "invalid JSON"),
    ('\n["problem", "answer"]\n', ":2:", "expected a JSON object, got list"),
    ('{"problem": "a", "answer": "b"}\n\n{"problem": "a"}\n', ":3:", "missing required key 'answer'"),
    ('{"problem": "a", "answer": 2}\n', ":1:", "key 'answer' should be str, got int"),
    ('{"problem": "a", "answer": "2", "options": "A B"}\n', ":1:", "key 'options' should be list"),
    ('{"problem": "a", "answer": "2", "options": ["A", 3]}\n', ":1:", "list of strings"),
    ('{"problem": "a", "answer": "2", "needs_image": "no"}\n', ":1:", "key 'needs_image' should be bool"),
])
def test_load_jsonl_errors_name_file_and_line(tmp_path, text, where, what):
    p = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(DataError) as e:
        data.load_jsonl(p)
    assert f"{p}{where}" in str(e.value) and what in str(e.value)
    assert isinstance(e.value, ValueError)


def test_load_jsonl_missing_file_and_custom_required(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        data.load_jsonl(tmp_path / "nope.jsonl")
    p = write(tmp_path / "sft.jsonl", '{"prompt": "p", "response": "r"}\n')
    assert data.load_jsonl(p, required=("prompt", "response")) == [{"prompt": "p", "response": "r"}]
    with pytest.raises(DataError, match="missing required key 'problem'"):
        data.load_jsonl(p)


# ---------------------------------------------------------------------------------------------------------
# load_benchmark
# ---------------------------------------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name, text_only, count, kinds", [
    ("math_train", None, 7498, {"math"}),
    ("math500", None, 500, {"math"}),
    ("aime2024", None, 30, {"math"}),
    ("theoremqa", None, 747, {"integer", "float", "bool", "list of integer", "list of float", "option"}),
    ("theoremqa", False, 800, {"integer", "float", "bool", "list of integer", "list of float", "option"}),
    ("mmlu_pro_1k", None, 1000, {"choice"}),
])
def test_real_benchmarks_load_with_documented_counts(name, text_only, count, kinds):
    rows = data.load_benchmark(name, data_dir=SHARED, text_only=text_only, download=False)
    assert len(rows) == count
    assert {r["kind"] for r in rows} == kinds
    assert all(isinstance(r["problem"], str) and isinstance(r["answer"], str) for r in rows)
    assert len({r["id"] for r in rows}) == count
    if name == "theoremqa":
        assert sum(r["needs_image"] for r in rows) == (53 if text_only is False else 0)
        assert all(r["kind"] == r["answer_type"] for r in rows)
    if name == "mmlu_pro_1k":
        assert all(r["answer"] in "ABCDEFGHIJ"[:len(r["options"])] for r in rows)


def test_load_benchmark_search_order_and_errors(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    write(mine / "aime2024.jsonl", '{"id": "x", "problem": "p", "answer": "1"}\n')
    env = tmp_path / "env"
    env.mkdir()
    write(env / "aime2024.jsonl", '{"id": "y", "problem": "q", "answer": "2"}\n')
    monkeypatch.setenv("LONGCOT_DATA", str(env))
    # data_dir wins over $LONGCOT_DATA, which wins over ../shared/data
    assert data.load_benchmark("aime2024", data_dir=mine) == [{"id": "x", "problem": "p", "answer": "1", "kind": "math"}]
    assert data.load_benchmark("aime2024")[0]["id"] == "y"
    assert data.data_dirs(mine)[:2] == [mine, env]
    assert data.data_dirs()[-2:] == [data.REPO.parent / "shared" / "data", data.REPO / "data"]
    with pytest.raises(DataError, match="unknown benchmark 'gsm8k'"):
        data.load_benchmark("gsm8k")
    monkeypatch.setattr(data, "data_dirs", lambda d=None: [tmp_path / "empty"])
    with pytest.raises(DataError, match="math500.jsonl not found in any of"):
        data.load_benchmark("math500", download=False)


def test_theoremqa_unknown_answer_type_is_an_error(tmp_path):
    write(tmp_path / "theoremqa.jsonl", '{"id": "t", "problem": "p", "answer": "1", "answer_type": "matrix"}\n')
    with pytest.raises(DataError, match="answer_type 'matrix'"):
        data.load_benchmark("theoremqa", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------
# conversion of the public sources (the download path without the network)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    (r"so $\boxed{5}$", "5"),
    (r"\boxed{1} then \boxed{ \frac{1}{2} }.", r"\frac{1}{2}"),
    (r"\boxed{\text{(C)}}", r"\text{(C)}"),
    (r"so the answer is $\boxed 2$.", "2"),
    (r"\boxed{}", ""),
    (r"\boxed{\frac{1}{2}", None),
    ("no box", None),
])
def test_last_boxed(text, want):
    assert data.last_boxed(text) == want


def test_convert_math_train_small():
    files = [
        ("x/train/prealgebra/10.json", {"problem": "p10", "level": "Level 2", "type": "Prealgebra",
                                        "solution": r"So $\boxed{3}$ and $\boxed{4}$."}),
        ("x/train/prealgebra/2.json", {"problem": "p2", "level": "Level ?", "type": "Prealgebra",
                                       "solution": r"$\boxed{\frac{1}{2}}$"}),
        ("x/train/algebra/5.json", {"problem": "p5", "level": "Level 5", "type": "Algebra",
                                    "solution": r"(A) $\boxed{}$"}),  # empty box: dropped
        ("x/train/algebra/7.json", {"problem": "p7", "level": "Level 1", "type": "Algebra",
                                    "solution": r"is $\boxed 9$."}),
    ]
    assert data.convert_math_train(files) == [
        {"id": "train/algebra/7.json", "problem": "p7", "answer": "9", "solution": r"is $\boxed 9$.",
         "subject": "Algebra", "level": 1},
        {"id": "train/prealgebra/2.json", "problem": "p2", "answer": r"\frac{1}{2}",
         "solution": r"$\boxed{\frac{1}{2}}$", "subject": "Prealgebra", "level": None},
        {"id": "train/prealgebra/10.json", "problem": "p10", "answer": "4",
         "solution": r"So $\boxed{3}$ and $\boxed{4}$.", "subject": "Prealgebra", "level": 2, "n_boxed": 2},
    ]
    with pytest.raises(DataError, match="train/<subject>/<n>.json"):
        data.convert_math_train([("x/test/algebra/1.json", files[0][1])])


@needs_shared
def test_convert_math_train_reproduces_the_shared_file():
    rows = shared_rows("math_train.jsonl")
    raw = [(f"agents-e8c4/src/agents/datasets/data/math/{r['id']}",
            {"problem": r["problem"], "solution": r["solution"], "type": r["subject"],
             "level": "Level ?" if r["level"] is None else f"Level {r['level']}"}) for r in rows]
    raw.append(("a/train/number_theory/7115.json", {"problem": "q", "solution": r"\boxed{}", "type": "Number Theory",
                                                    "level": "Level 1"}))
    assert data.convert_math_train(reversed(raw)) == rows


def test_convert_math500_and_aime2024_small():
    assert data.convert_math500([{"problem": "p", "solution": "s", "answer": "1", "subject": "Algebra",
                                  "level": 3, "unique_id": "test/algebra/1.json"}]) == [
        {"id": "test/algebra/1.json", "problem": "p", "answer": "1", "solution": "s", "subject": "Algebra", "level": 3}]
    url = "https://artofproblemsolving.com/wiki/index.php/2024_AIME_{}_Problems/Problem_{}"
    raw = [{"id": 61, "problem": "b", "solution": "sb", "answer": "025", "url": url.format("I", 10)},
           {"id": 75, "problem": "c", "solution": "sc", "answer": 7, "url": url.format("II", 1)},
           {"id": 67, "problem": "a", "solution": "sa", "answer": "204", "url": url.format("I", 2)}]
    got = data.convert_aime2024(raw)
    assert [r["id"] for r in got] == ["2024-I-2", "2024-I-10", "2024-II-1"]
    assert [r["answer"] for r in got] == ["204", "25", "7"]
    assert got[1] == {"id": "2024-I-10", "problem": "b", "answer": "25", "solution": "sb",
                      "url": url.format("I", 10), "source_id": 61}
    with pytest.raises(DataError, match="cannot read exam"):
        data.convert_aime2024([{"id": 1, "problem": "p", "solution": "s", "answer": "1", "url": "x"}])


@needs_shared
def test_convert_math500_and_aime2024_reproduce_the_shared_files():
    rows = shared_rows("math500.jsonl")
    raw = [{"problem": r["problem"], "solution": r["solution"], "answer": r["answer"], "subject": r["subject"],
            "level": r["level"], "unique_id": r["id"]} for r in rows]
    assert data.convert_math500(raw) == rows
    rows = shared_rows("aime2024.jsonl")
    raw = [{"id": r["source_id"], "problem": r["problem"], "solution": r["solution"], "answer": r["answer"].zfill(3),
            "url": r["url"]} for r in sorted(rows, key=lambda r: r["source_id"])]
    assert data.convert_aime2024(raw) == rows


def test_convert_theoremqa_small():
    base = {"id": "a/b.json", "Question": "q", "field": "Math", "subfield": "Calculus", "theorem": "t", "source": "s"}
    raw = [base | {"Answer": True, "Answer_type": "bool", "Picture": None, "explanation": "NONE"},
           base | {"Answer": [0, 5], "Answer_type": "list of integer", "Picture": "images/x.png", "explanation": "e"},
           base | {"Answer": 4e-05, "Answer_type": "float", "Picture": None, "explanation": None},
           base | {"Answer": "(c)", "Answer_type": "option", "Picture": None}]
    got = data.convert_theoremqa(raw)
    assert [r["answer"] for r in got] == ["True", "[0, 5]", "4e-05", "(c)"]
    assert [r["needs_image"] for r in got] == [False, True, False, False]
    assert [("solution" in r) for r in got] == [False, True, False, False]
    assert got[1] == {"id": "a/b.json", "problem": "q", "answer": "[0, 5]", "answer_type": "list of integer",
                      "answer_raw": [0, 5], "needs_image": True, "image": "images/x.png", "subject": "Math",
                      "subfield": "Calculus", "theorem": "t", "source": "s", "solution": "e"}


@needs_shared
def test_convert_theoremqa_reproduces_the_shared_file():
    rows = shared_rows("theoremqa.jsonl")
    raw = [{"Question": r["problem"], "Answer": r["answer_raw"], "Answer_type": r["answer_type"], "Picture": r["image"],
            "source": r["source"], "id": r["id"], "explanation": r.get("solution", "NONE"), "theorem": r["theorem"],
            "subfield": r["subfield"], "field": r["subject"]} for r in rows]
    assert data.convert_theoremqa(raw) == rows


def test_sample_mmlu_pro_is_seeded_sorted_and_order_free():
    raw = [{"question_id": q} for q in range(100, 120)]
    got = [r["question_id"] for r in data.sample_mmlu_pro(raw, k=5)]
    # random.Random(0).sample(range(20), 5) == [12, 13, 1, 8, 15] (CPython's documented-stable sampler)
    assert got == [101, 108, 112, 113, 115]
    assert [r["question_id"] for r in data.sample_mmlu_pro(raw[::-1], k=5)] == got


@needs_shared
def test_convert_mmlu_pro_reproduces_the_shared_file():
    rows = shared_rows("mmlu_pro_1k.jsonl")
    assert hashlib.md5(",".join(r["id"] for r in rows).encode()).hexdigest() == data.MMLU_PRO_SAMPLE_MD5
    raw = [{"question_id": r["question_id"], "question": r["problem"], "options": r["options"], "answer": r["answer"],
            "answer_index": r["answer_index"], "cot_content": "", "category": r["subject"], "src": r["src"]}
           for r in rows]
    assert data.convert_mmlu_pro(raw) == [{k: v for k, v in r.items() if k != "alt_version"} for r in rows]


def test_download_benchmark_with_a_fake_fetch(tmp_path, capsys):
    # math500: JSONL as served by GitHub raw
    raw = {"problem": "p", "solution": r"\boxed{1}", "answer": "1", "subject": "Algebra", "level": 2,
           "unique_id": "test/algebra/1.json"}
    urls = []
    path = data.download_benchmark("math500", tmp_path, fetch_fn=lambda u: urls.append(u) or
                                   (json.dumps(raw) + "\n").encode())
    assert urls == [data.BENCHMARKS["math500"]["url"]] and path == tmp_path / "math500.jsonl"
    assert data.load_benchmark("math500", data_dir=tmp_path) == [
        {"id": "test/algebra/1.json", "problem": "p", "answer": "1", "solution": r"\boxed{1}", "subject": "Algebra",
         "level": 2, "kind": "math"}]
    # math_train: a GitHub tarball of the source repository
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in [("agents-x/src/agents/datasets/data/math/train/algebra/3.json",
                           {"problem": "p", "level": "Level 4", "type": "Algebra", "solution": r"$\boxed{7}$"}),
                          ("agents-x/src/agents/datasets/data/math/test/algebra/3.json", {}),
                          ("agents-x/README.md", "")]:
            blob = json.dumps(obj).encode()
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    data.download_benchmark("math_train", tmp_path, fetch_fn=lambda u: buf.getvalue())
    assert data.load_jsonl(tmp_path / "math_train.jsonl") == [
        {"id": "train/algebra/3.json", "problem": "p", "answer": "7", "solution": r"$\boxed{7}$", "subject": "Algebra",
         "level": 4}]
    assert "expected 7498" in capsys.readouterr().err
    # failures: no network, a Git-LFS pointer
    def offline(url):
        raise OSError("no route to host")
    with pytest.raises(DataError, match="could not be downloaded .*no route to host"):
        data.download_benchmark("aime2024", tmp_path, fetch_fn=offline)
    with pytest.raises(DataError, match="Git-LFS pointer"):
        data.download_benchmark("aime2024", tmp_path, fetch_fn=lambda u: b"version https://git-lfs.github.com/spec/v1\n")


def test_mmlu_download_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match="pip install pyarrow"):
        data.download_benchmark("mmlu_pro_1k", tmp_path, fetch_fn=lambda u: b"PAR1")


# ---------------------------------------------------------------------------------------------------------
# format_prompt
# ---------------------------------------------------------------------------------------------------------

def chat_tokenizer(template):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")),
                                  unk_token="<unk>")
    tok.chat_template = template
    return tok


def test_format_prompt_plain():
    assert data.format_prompt("12+3=?") == "12+3=?\nAnswer in \\boxed{}.\n"
    assert data.format_prompt("Pick", options=["x", "y", "z"]) == \
        "Pick\n(A) x\n(B) y\n(C) z\nAnswer with the letter in \\boxed{}.\n"
    assert data.format_prompt("12+3=?", tokenizer=chat_tokenizer(None)) == "12+3=?\nAnswer in \\boxed{}.\n"
    with pytest.raises(ValueError, match="options must be a non-empty list"):
        data.format_prompt("Pick", options="AB")
    with pytest.raises(ValueError, match="problem must be a string"):
        data.format_prompt(None)


def test_format_prompt_uses_the_chat_template():
    tok = chat_tokenizer("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %}[assistant]{% endif %}")
    assert data.format_prompt("1+1?", tok) == \
        "[user]1+1?\nPlease reason step by step, and put your final answer within \\boxed{}.[assistant]"
    assert data.format_prompt("Pick", tok, ["x", "y"]) == ("[user]Pick\n(A) x\n(B) y\nPlease reason step by step, and "
                                                           "put the letter of the correct option within \\boxed{}.[assistant]")


# ---------------------------------------------------------------------------------------------------------
# the classroom task
# ---------------------------------------------------------------------------------------------------------

def test_classroom_is_deterministic():
    a = data.classroom(50, seed=3)
    assert a == data.classroom(50, seed=3)
    assert [r["problem"] for r in a] != [r["problem"] for r in data.classroom(50, seed=4)]
    assert set(a[0]) == {"id", "problem", "answer", "long_cot", "short_cot", "kind"} and a[0]["kind"] == "math"
    assert re.fullmatch(r"\d{3}\+\d{3}=\?", a[0]["problem"])


def test_classroom_splits_are_disjoint():
    train = [r["problem"] for r in data.classroom(3000, seed=0)]
    test = [r["problem"] for r in data.classroom(500, seed=0, split="test")]
    other_seed = [r["problem"] for r in data.classroom(500, seed=1, split="test")]
    assert len(set(train)) == 3000 and len(set(test)) == 500
    assert not set(train) & (set(test) | set(other_seed))
    assert all(data.is_test_problem(p) for p in test) and not any(data.is_test_problem(p) for p in train)


STEP = re.compile(r"(?:Wait, recheck: )? *(\d+)[+*-] *(\d+): +(\d+)([+*-])(\d+)([+-])(\d+)=(\d+), write (\d), "
                  r"(carry|borrow) (\d+), so far +(\d+)\.")


@pytest.mark.parametrize("knobs", [{}, {"ops": "sub"}, {"ops": "mul", "digits": 4}, {"ops": "add,sub,mul"},
                                   {"digits": 1, "digits_b": 5, "ops": ["add", "sub"]}])
def test_classroom_answers_and_steps_are_right(knobs):
    try:
        import verify
        extract = verify.extract_answer
    except ImportError:
        extract = boxed
    for seed in range(3):
        for r in data.classroom(150, seed=seed, p_error=0.5, **knobs):
            a, op, b = re.fullmatch(r"(\d+)([+*-])(\d+)=\?", r["problem"]).groups()
            want = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            assert r["answer"] == str(want)
            for trace in (r["long_cot"], r["short_cot"]):
                assert boxed(trace) == r["answer"] and extract(trace) == r["answer"]
                assert trace.endswith(f"\\boxed{{{want}}}")
            *work, so = r["short_cot"].split("\n")[0].split(", ")  # "x+y+c=v" per column, then "so N."
            assert so == f"so {want}." and len(work) == max(len(a), len(b))
            for i, step in enumerate(work):  # column i (from the right): its digits and its true result
                x, o1, y, o2, c, value = re.fullmatch(r"(\d+)([+*-])(\d)([+-])(\d+)=(\d+)", step).groups()
                assert int(value) == eval(f"{x}{o1}{y}{o2}{c}")
                if op == "*":  # "b*x+c": the multiplier, then a's digit
                    assert x == b and y == a[::-1][i]
                else:  # a's digit (+10 on a borrow) and b's digit, each 0 past its number's end
                    assert int(x) % 10 == int((a[::-1] + "0" * 18)[i]) and y == (b[::-1] + "0" * 18)[i]
            lines = r["long_cot"].split("\n")
            steps = [(i, STEP.fullmatch(ln)) for i, ln in enumerate(lines) if STEP.fullmatch(ln)]
            assert steps, r["long_cot"]
            for i, m in steps:
                left_a, left_b, x, o1, y, o2, c, value, written, kind, out, so_far = m.groups()
                if op == "*":  # "b*x+c": the multiplier, then a's digit
                    assert left_b == x and left_a[-1] == y
                else:  # the digits added are the last ones of what is left of a and b (a borrow shows +10)
                    assert left_a[-1] == x[-1] and left_b[-1] == y
                assert so_far.startswith(written)
                true = eval(f"{x}{o1}{y}{o2}{c}")  # digits and + - * only
                corrected = i + 1 < len(lines) and lines[i + 1].startswith("Wait, recheck: ")
                assert (int(value) != true) == corrected, r["long_cot"]
                clean = [ln[len("Wait, recheck: "):] if ln.startswith("Wait") else ln for ln in lines if STEP.fullmatch(ln)]
                assert len({len(ln) for ln in clean}) == 1  # every column line has the same width
                if kind == "carry":
                    assert (int(written), int(out)) == (int(value) % 10, int(value) // 10)
                else:
                    assert int(written) == int(value) and int(out) == (int(x) >= 10)


def test_classroom_long_cot_has_reflections_at_the_set_rate():
    rows = data.classroom(2000, seed=0)
    rate = sum("Wait, recheck:" in r["long_cot"] for r in rows) / len(rows)
    assert abs(rate - 0.3) < 0.04  # binomial sd 0.010
    assert all(r["long_cot"].count("Wait") <= 1 and "wait" not in r["short_cot"].lower() for r in rows)
    assert not any("Wait" in r["long_cot"] for r in data.classroom(200, seed=0, p_error=0.0))
    assert all("Wait, recheck:" in r["long_cot"] for r in data.classroom(200, seed=0, p_error=1.0))


def test_classroom_lengths_are_in_the_documented_range():
    rows = data.classroom(2000, seed=0)
    long = [len(r["long_cot"]) for r in rows]
    short = [len(r["short_cot"]) for r in rows]
    assert 195 <= min(long) and max(long) <= 325 and 240 <= sum(long) / len(long) <= 265
    assert 46 <= min(short) and max(short) <= 51  # 3 columns of "x+y+c=v", "so N.", "\boxed{N}"
    assert max(len(data.format_prompt(r["problem"])) for r in rows) == 30


def test_classroom_mix_of_sizes():
    """max_digits draws each problem's size uniformly (both operands alike); without it nothing changes, and a
    training set larger than the small sizes' problem space repeats problems only when distinct=False."""
    rows = data.classroom(3000, 5, "train", digits=2, max_digits=4, distinct=False)
    sizes = [tuple(len(x) for x in r["problem"][:-2].split("+")) for r in rows]
    assert all(a == b for a, b in sizes)
    counts = {d: sum(a == d for a, _ in sizes) for d in (2, 3, 4)}
    assert all(abs(c - 1000) < 4 * (3000 * 1 / 3 * 2 / 3) ** 0.5 for c in counts.values()), counts  # 4 binomial SDs
    assert all(r["answer"] == str(eval(r["problem"][:-2])) for r in rows)
    assert data.classroom(50, 5, "test", digits=3, max_digits=3) == data.classroom(50, 5, "test", digits=3)
    with pytest.raises(ValueError, match="too small"):
        data.classroom(300, 0, digits=1)  # only 100 one-digit sums exist (90 of them training)
    assert len(data.classroom(300, 0, digits=1, distinct=False)) == 300
    with pytest.raises(ValueError, match="max_digits"):
        data.classroom(1, 0, digits=3, max_digits=2)


def test_classroom_bad_knobs():
    with pytest.raises(ValueError, match="split"):
        data.classroom(1, 0, split="valid")
    with pytest.raises(ValueError, match="ops"):
        data.classroom(1, 0, ops="div")
    with pytest.raises(ValueError, match="digits"):
        data.classroom(1, 0, digits=0)
    with pytest.raises(ValueError, match="too small"):
        data.classroom(200, 0, digits=1)  # only 100 one-digit sums exist
    with pytest.raises(TypeError):
        data.classroom(1, 0, difficulty=3)


def test_sft_rows_and_the_cli(tmp_path):
    rows = data.classroom(5, seed=0)
    long, short = data.sft_rows(rows), data.sft_rows(rows, cot="short")
    assert [s["prompt"] for s in long] == [data.format_prompt(r["problem"]) for r in rows]
    assert [s["response"] for s in long] == [r["long_cot"] for r in rows]
    assert [s["response"] for s in short] == [r["short_cot"] for r in rows]
    assert [s["answer"] for s in short] == [r["answer"] for r in rows]
    with pytest.raises(ValueError, match="cot"):
        data.sft_rows(rows, cot="medium")
    out = tmp_path / "c.jsonl"
    data.main(["classroom", "--n", "5", "--seed", "0", "--cot", "long", "--out", str(out)])
    assert data.load_jsonl(out, required=("prompt", "response")) == long
