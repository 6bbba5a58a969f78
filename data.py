"""Data: problem sets, JSONL input/output, prompt formatting, the classroom task.

What it does
------------
1. Loads the evaluation / training problem sets as lists of dicts (`load_jsonl`, `load_benchmark`):
   MATH train (7,498), MATH-500 (500), AIME 2024 (30), TheoremQA (800, 747 text-only), MMLU-Pro-1k (1,000).
   Every row has `problem` and `answer` (strings) and gets a `kind` that tells verify.py how to grade it.
   When a file is not on disk the loader downloads it from the public source named in
   ../shared/data/README.md and converts it to the same row format (pure `convert_*` functions below).
2. Formats a problem as a prompt (`format_prompt`): the model's chat template when it has one, as the paper
   does, else a short plain template. Both ask for the final answer in \\boxed{}.
3. Generates the *classroom* task (`classroom`): seeded multi-digit arithmetic with a long chain of thought
   (column-by-column lines laid out at one width with the digits so far, and in ~30% of traces a wrong step
   followed by "Wait, recheck:" and its correction) and a short chain of thought (each column's result, then
   the answer), small enough for a ~1M-parameter
   character-level model trained on a laptop CPU.

Making data from a model (rejection sampling, action prompting, answer extraction and filtering) is distill.py's:
data.py never imports the sampler.

How to run
----------
    python data.py classroom --n 2000 --seed 0 --cot long --out classroom_long.jsonl
    python data.py classroom --n 500 --seed 0 --split test --out classroom_test.jsonl
    python data.py download all                       # fetch the five benchmarks into ./data (needs internet)

Where it departs from the paper
-------------------------------
- MMLU-Pro-1k is our own seeded 1,000-question sample (the paper's sample is not public); see the README.
- MATH train is the 7,500-problem MATH train split (2 unusable rows dropped), not PRM800K's 12k split.
- The classroom task does not exist in the paper: it is a toy, verifiable task so the whole SFT -> PPO
  pipeline can be run and inspected on a CPU in minutes.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    """All command-line arguments, one block per sub-command."""
    p = argparse.ArgumentParser(description="longcot data tools", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("classroom", help="write the synthetic arithmetic task as SFT JSONL",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--n", type=int, default=2000, help="number of problems; 2000 is enough for a 1M-param model")
    c.add_argument("--seed", type=int, default=0, help="the data are a pure function of (seed, split, knobs)")
    c.add_argument("--split", default="train", choices=["train", "test"], help="hash-disjoint problem halves")
    c.add_argument("--cot", default="long", choices=["long", "short"], help="which trace becomes the response")
    c.add_argument("--ops", default="add", help="comma list of add,sub,mul; addition alone is the default task")
    c.add_argument("--digits", type=int, default=3, help="digits of the first operand; 3 is learnable in minutes")
    c.add_argument("--digits-b", type=int, default=None, help="digits of the second operand (add/sub); None = --digits")
    c.add_argument("--max-digits", type=int, default=None, help="a mix of sizes: digits..max-digits per problem")
    c.add_argument("--p-error", type=float, default=0.3, help="fraction of long traces with a wrong step + correction")
    c.add_argument("--out", default="classroom_long.jsonl", help="output JSONL (prompt, response, id, answer)")

    d = sub.add_parser("download", help="fetch benchmark files into ./data (needs internet)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("names", nargs="+", help="benchmark names, or 'all'")
    d.add_argument("--dest", default=str(REPO / "data"), help="folder the JSONL files are written to")

    return p


# ----------------------------------------------------------------------------------------------------------
# JSONL input / output
# ----------------------------------------------------------------------------------------------------------

class DataError(ValueError):
    """Bad or missing data: the message names the file, the 1-based line, and what was expected."""


# the type each known key must have when present (required keys must also be present)
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str, "problem": str, "answer": str, "solution": str, "answer_type": str,
    "options": list, "needs_image": bool,
}


def _type_name(t) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def load_jsonl(path, required: Sequence[str] = ("problem", "answer")) -> list[dict]:
    """Read one JSON object per line; blank lines are skipped. Raise DataError on any malformed line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), start=1):  # JSON strings hold no raw newline
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key in required:
            if key not in row:
                raise DataError(f"{where}: missing required key {key!r} (keys: {sorted(row)})")
        for key, want in FIELD_TYPES.items():
            if key in row and not isinstance(row[key], want):
                raise DataError(f"{where}: key {key!r} should be {_type_name(want)}, "
                                f"got {type(row[key]).__name__}")
        if "options" in row and not all(isinstance(o, str) for o in row["options"]):
            raise DataError(f"{where}: key 'options' should be a list of strings")
        rows.append(row)
    return rows


def looks_like_path(spec: str) -> bool:
    """A --prompts / --data / --eval-data value names a file, not a benchmark, when it exists, ends in .jsonl or
    .json, or has a folder part: a missing file is then reported as missing, not as an unknown benchmark."""
    return os.path.exists(spec) or spec.endswith((".jsonl", ".json")) or "/" in spec or os.sep in spec


def write_jsonl(path, rows: Iterable[dict]) -> int:
    """Write rows as UTF-8 JSONL (the format of ../shared/data), atomically (PATH.tmp, renamed when complete:
    an interrupted write leaves the old file or none); return the number written."""
    from dist import atomic_open
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


# ----------------------------------------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------------------------------------

_GH = "https://raw.githubusercontent.com"
# name -> file, how it is graded, where it comes from (see ../shared/data/README.md), sha256 of our JSONL
BENCHMARKS: dict[str, dict] = {
    "math_train": dict(
        file="math_train.jsonl", kind="math", rows=7498,
        url="https://codeload.github.com/aiwaves-cn/agents/tar.gz/e8c4e3c2d19739d3dff59e577d1c97090cc15f59",
        sha256="9d86e0f1241890ca81d4746de2aa3639864637f5524eb1a69a2a1c82107143e0"),
    "math500": dict(
        file="math500.jsonl", kind="math", rows=500,
        url=f"{_GH}/hkust-nlp/simpleRL-reason/cf1c7858bfc145a27aa733e75d930d34f0d318a6/"
            "examples/simplelr_math_eval/data/math500/test.jsonl",
        sha256="3fe68ca2c1b94f9381a16527afdebf60247d7d364657d11e3d8d8db539cabac3"),
    "aime2024": dict(
        file="aime2024.jsonl", kind="math", rows=30,
        url=f"{_GH}/QwenLM/Qwen2.5-Math/a45202bd16f1ec06f433442dc1152d0074773465/evaluation/data/aime24/test.jsonl",
        sha256="e5e0e1c025b0748228d0aa9df00e1d2ac3bf3436740dbb6d3480bb39058d80a6"),
    "theoremqa": dict(
        file="theoremqa.jsonl", kind=None, rows=800,  # kind = the row's answer_type
        url=f"{_GH}/TIGER-AI-Lab/TheoremQA/acfc9686aa9b49f3c8f189364a9a9ee9c53da039/theoremqa_test.json",
        sha256="fbe30e8d932c34a1acd5fc688982fd0caa9cae8e8f6d7ad7312da9ac2572b7f1"),
    "mmlu_pro_1k": dict(
        file="mmlu_pro_1k.jsonl", kind="choice", rows=1000,
        url=f"{_GH}/18907305772/FuseAI/7d9a30729e4b5a40bca19a97e188bfc07edf0809/FuseChat-3.0/FuseEval/"
            "General-Eval/MC-Eval/data/MMLU-Pro/data/test-00000-of-00001.parquet",
        # our file also carries `alt_version` for 4 rows, taken from other dumps: a fresh download lacks it,
        # so its sha256 differs from this one while the 1,000 sampled questions are the same
        sha256="ea67cb12515ac82dedc6e7ca9a9c45c3d815dbaeba7e7a7a008835cb4d9c87b0"),
}
THEOREMQA_KINDS = ("integer", "float", "bool", "list of integer", "list of float", "option")


def data_dirs(data_dir=None) -> list[Path]:
    """Folders searched for benchmark files, in order: data_dir, $LONGCOT_DATA, <repo>/../shared/data, <repo>/data."""
    dirs = [data_dir, os.environ.get("LONGCOT_DATA"), REPO.parent / "shared" / "data", REPO / "data"]
    return [Path(d) for d in dirs if d]


def load_benchmark(name: str, data_dir=None, text_only: bool | None = None, download: bool = True) -> list[dict]:
    """Rows of a named benchmark, each with a `kind` for the verifier. Downloads the file if it is nowhere local.

    text_only drops rows flagged needs_image (only TheoremQA has them); None means True for TheoremQA.
    """
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    dirs = data_dirs(data_dir)
    path = next((d / spec["file"] for d in dirs if (d / spec["file"]).is_file()), None)
    if path is None:
        if not download:
            raise DataError(f"{spec['file']} not found in any of {[str(d) for d in dirs]}")
        path = download_benchmark(name, REPO / "data")
    rows = load_jsonl(path, required=("id", "problem", "answer"))
    if text_only is None:
        text_only = name == "theoremqa"
    if text_only:
        rows = [r for r in rows if not r.get("needs_image", False)]
    for r in rows:
        if spec["kind"] is not None:
            r["kind"] = spec["kind"]
        elif r.get("answer_type") in THEOREMQA_KINDS:
            r["kind"] = r["answer_type"]
        else:
            raise DataError(f"{path}: row {r['id']!r} has answer_type {r.get('answer_type')!r}, "
                            f"expected one of {THEOREMQA_KINDS}")
    return rows


# ---- conversion from the public sources (pure functions; the only network call is `fetch`) ----

def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} in text (braces matched, stripped); also the brace-less `\\boxed 2`."""
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = i + len("\\boxed")
    if text[j:j + 1] == "{":
        depth = 0
        for k in range(j, len(text)):
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            if depth == 0:
                return text[j + 1:k].strip()
        return None  # unbalanced
    m = re.match(r"\s+([^\s$]+)", text[j:])  # `\boxed 2$.` -> "2"
    return m.group(1) if m else None


_MATH_PATH = re.compile(r"(?:^|/)train/([^/]+)/(\d+)\.json$")


def convert_math_train(files: Iterable[tuple[str, dict]]) -> list[dict]:
    """MATH train per-problem files (path, {problem, level, type, solution}) -> our rows.

    The answer is the last boxed expression of the solution; rows whose last box is empty are dropped;
    rows sort by subject folder, then numeric file id.
    """
    rows = []
    for path, raw in files:
        m = _MATH_PATH.search(path)
        if m is None:
            raise DataError(f"{path}: expected a path ending in train/<subject>/<n>.json")
        answer = last_boxed(raw["solution"])
        if not answer:
            continue  # no or empty \boxed{}: originally multiple choice, unusable
        level = raw["level"].removeprefix("Level ").strip()
        row = {"id": f"train/{m.group(1)}/{m.group(2)}.json", "problem": raw["problem"], "answer": answer,
               "solution": raw["solution"], "subject": raw["type"], "level": int(level) if level.isdigit() else None}
        n_boxed = raw["solution"].count("\\boxed")
        if n_boxed > 1:
            row["n_boxed"] = n_boxed
        rows.append((m.group(1), int(m.group(2)), row))
    return [row for _, _, row in sorted(rows, key=lambda t: t[:2])]


def convert_math500(raw_rows: Iterable[dict]) -> list[dict]:
    """PRM800K / MATH-500 test.jsonl rows -> our rows (unique_id becomes id; order kept)."""
    return [{"id": r["unique_id"], "problem": r["problem"], "answer": r["answer"], "solution": r["solution"],
             "subject": r["subject"], "level": int(r["level"])} for r in raw_rows]


_AIME_URL = re.compile(r"2024_AIME_(I{1,2})_Problems/Problem_(\d+)")


def convert_aime2024(raw_rows: Iterable[dict]) -> list[dict]:
    """Qwen2.5-Math aime24 rows -> our rows, ordered I-1..I-15, II-1..II-15; answers lose zero padding."""
    rows = []
    for r in raw_rows:
        m = _AIME_URL.search(r["url"])
        if m is None:
            raise DataError(f"AIME row {r.get('id')!r}: cannot read exam and problem number from url {r['url']!r}")
        exam, num = m.group(1), int(m.group(2))
        rows.append(((len(exam), num), {"id": f"2024-{exam}-{num}", "problem": r["problem"],
                                        "answer": str(int(r["answer"])), "solution": r["solution"],
                                        "url": r["url"], "source_id": int(r["id"])}))
    return [row for _, row in sorted(rows, key=lambda t: t[0])]


def theoremqa_answer_str(answer) -> str:
    """TheoremQA's typed answer as our string: True/False, JSON for lists, str() (Python repr) otherwise."""
    if isinstance(answer, list):
        return json.dumps(answer)
    return str(answer)


def convert_theoremqa(raw_rows: Iterable[dict]) -> list[dict]:
    """theoremqa_test.json entries -> our rows; questions with a Picture are flagged needs_image."""
    rows = []
    for r in raw_rows:
        row = {"id": r["id"], "problem": r["Question"], "answer": theoremqa_answer_str(r["Answer"]),
               "answer_type": r["Answer_type"], "answer_raw": r["Answer"], "needs_image": bool(r.get("Picture")),
               "image": r.get("Picture") or None, "subject": r["field"], "subfield": r["subfield"],
               "theorem": r["theorem"], "source": r["source"]}
        if r.get("explanation") not in (None, "", "NONE"):
            row["solution"] = r["explanation"]
        rows.append(row)
    return rows


MMLU_PRO_SAMPLE_MD5 = "27f5d9b76c15d15ad0ea0c4a6886b666"  # md5 of the comma-joined ids of our 1k sample


def sample_mmlu_pro(raw_rows: Sequence[dict], k: int = 1000, seed: int = 0) -> list[dict]:
    """The README's seeded sample: sort by question_id, random.Random(seed).sample(rows, k), sort again."""
    rows = sorted(raw_rows, key=lambda r: int(r["question_id"]))
    return sorted(random.Random(seed).sample(rows, k), key=lambda r: int(r["question_id"]))


def convert_mmlu_pro(raw_rows: Iterable[dict]) -> list[dict]:
    """MMLU-Pro parquet records -> our rows (question stem and options kept apart; answer is a letter)."""
    return [{"id": str(r["question_id"]), "problem": r["question"], "answer": r["answer"],
             "options": list(r["options"]), "answer_index": int(r["answer_index"]), "subject": r["category"],
             "src": r["src"], "question_id": int(r["question_id"])} for r in raw_rows]


def fetch(url: str, timeout: float = 120.0) -> bytes:
    """The one network call: GET url and return its bytes."""
    import urllib.request
    req = urllib.request.Request(url, headers={"User-Agent": "longcot-data/1.0"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def _read_parquet(blob: bytes) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("converting MMLU-Pro needs pyarrow to read its parquet file: pip install pyarrow") from None
    return pq.read_table(io.BytesIO(blob)).to_pylist()


def _math_train_files(blob: bytes) -> Iterable[tuple[str, dict]]:
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar:
            if member.isfile() and "/src/agents/datasets/data/math/train/" in member.name \
                    and member.name.endswith(".json"):
                yield member.name, json.loads(tar.extractfile(member).read().decode("utf-8"))


def download_benchmark(name: str, dest_dir, fetch_fn: Callable[[str], bytes] = fetch) -> Path:
    """Fetch a benchmark from its public source, convert it, write dest_dir/<file>; return the path."""
    spec = BENCHMARKS[name]
    print(f"downloading {name} from {spec['url']}", file=sys.stderr)
    try:
        blob = fetch_fn(spec["url"])
    except OSError as e:  # urllib.error.URLError is an OSError
        raise DataError(f"{spec['file']} is not available locally and could not be downloaded from "
                        f"{spec['url']}: {e}. Put the file in one of {[str(d) for d in data_dirs()]}") from None
    if blob.startswith(b"version https://git-lfs"):
        raise DataError(f"{spec['url']} returned a Git-LFS pointer instead of the data")
    if name == "math_train":
        rows = convert_math_train(_math_train_files(blob))
    elif name == "math500":
        rows = convert_math500(json.loads(l) for l in blob.decode("utf-8").splitlines() if l.strip())
    elif name == "aime2024":
        rows = convert_aime2024(json.loads(l) for l in blob.decode("utf-8").splitlines() if l.strip())
    elif name == "theoremqa":
        rows = convert_theoremqa(json.loads(blob.decode("utf-8")))
    else:  # mmlu_pro_1k
        rows = convert_mmlu_pro(sample_mmlu_pro(_read_parquet(blob)))
        ids_md5 = hashlib.md5(",".join(r["id"] for r in rows).encode()).hexdigest()
        if ids_md5 != MMLU_PRO_SAMPLE_MD5:
            print(f"warning: the MMLU-Pro sample differs from ours (ids md5 {ids_md5})", file=sys.stderr)
    if len(rows) != spec["rows"]:
        print(f"warning: {name} has {len(rows)} rows, expected {spec['rows']}", file=sys.stderr)
    path = Path(dest_dir) / spec["file"]
    write_jsonl(path, rows)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != spec["sha256"]:
        print(f"note: {path} sha256 {digest} differs from the reference file's", file=sys.stderr)
    return path


# ----------------------------------------------------------------------------------------------------------
# Prompt formatting
# ----------------------------------------------------------------------------------------------------------

# Chat models get the instruction Qwen2.5-Math uses; the plain template is short because the classroom model
# is character-level (every character is a token): "<problem>\nAnswer in \boxed{}.\n" adds 20 characters.
CHAT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHAT_CHOICE_INSTRUCTION = "Please reason step by step, and put the letter of the correct option within \\boxed{}."
PLAIN_INSTRUCTION = "Answer in \\boxed{}."
PLAIN_CHOICE_INSTRUCTION = "Answer with the letter in \\boxed{}."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_options(options: Sequence[str]) -> str:
    """'(A) first\\n(B) second...' for a multiple-choice question."""
    if not isinstance(options, (list, tuple)) or not options or not all(isinstance(o, str) for o in options):
        raise ValueError(f"options must be a non-empty list of strings, got {options!r}")
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options can be lettered, got {len(options)}")
    return "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


def format_prompt(problem: str, tokenizer=None, options: Sequence[str] | None = None) -> str:
    """The text the model sees before its response. Uses the tokenizer's chat template when it has one."""
    if not isinstance(problem, str):
        raise ValueError(f"problem must be a string, got {type(problem).__name__}")
    chat = getattr(tokenizer, "chat_template", None) is not None
    body = problem if options is None else f"{problem}\n{format_options(options)}"
    if chat:
        instruction = CHAT_INSTRUCTION if options is None else CHAT_CHOICE_INSTRUCTION
        msg = f"{body}\n{instruction}"
        return tokenizer.apply_chat_template([{"role": "user", "content": msg}], tokenize=False,
                                             add_generation_prompt=True)
    instruction = PLAIN_INSTRUCTION if options is None else PLAIN_CHOICE_INSTRUCTION
    return f"{body}\n{instruction}\n"


# ----------------------------------------------------------------------------------------------------------
# The classroom task: seeded arithmetic with long and short chains of thought
# ----------------------------------------------------------------------------------------------------------
#
# Problem "482+376=?", answer "858". Long CoT (default knobs, 3-digit + 3-digit addition: 202-319 characters,
# mean about 253; the plain prompt adds 30). Every column line has the same width (numbers right-aligned, sums
# with two digits), so each digit a line needs sits at a fixed distance: the digits to add end what is left of
# the numbers at the start of the line, and what is left, the carry and the digits so far are the line above
# shifted by one column; the answer line copies the digits so far from the end of the line above. A
# 0.8M-parameter model with rotary positions learns such fixed-distance look-ups quickly; fetching digits from a
# distance that varies from trace to trace it did not learn in our CPU budget (an earlier ending restated
# "482+376=858" from the prompt: models that got every column right still copied the operands or the sum wrong):
#
#     Add right to left.
#     482+376: 2+6+0=08, write 8, carry 0, so far    8.
#      48+ 37: 8+7+0=15, write 5, carry 1, so far   58.
#     Wait, recheck:  48+ 37: 8+7+0=14, write 4, carry 1, so far   48.
#       4+  3: 4+3+1=08, write 8, carry 0, so far  858.
#     So the answer is 858.
#     \boxed{858}
#
# Short CoT (3-digit addition: 46-51 characters): a plain solution, the column results and the answer, with no
# layout and no rechecks, "2+6+0=8, 8+7+0=15, 4+3+1=8, so 858.\n\boxed{858}". As in the paper, where the short
# CoT is an ordinary step-by-step solution (Qwen2.5-Math-72B-Instruct's) and the long CoT a longer one with
# reflection; here the short one leaves the look-ups at distances that vary (each digit sits after results of
# varying width). Until 2026-11-30 it was the bare answer ("482+376=858. \boxed{858}"), which the tiny model
# could not learn for mixed sizes (replicate.py, version 3). With all three ops the long CoT is 201-319
# characters. Subtraction borrows ("12-6-0=6, write 6, borrow 1, so far ...") and multiplication by a single
# digit carries ("7*8+3=59, write 9, carry 5, ...").

OPS = {"add": "+", "sub": "-", "mul": "*"}
RECHECK = "Wait, recheck: "


def _value(a: int, b: int, op: str) -> int:
    """The exact answer: a + b, a - b or a * b."""
    return {"add": a + b, "sub": a - b, "mul": a * b}[op]


def _digits(x: int) -> list[int]:
    """Decimal digits, least significant first: 482 -> [2, 8, 4]."""
    return [int(c) for c in reversed(str(x))]


def _wrong(value: int, rng: random.Random, lo: int, hi: int) -> int:
    """A plausible wrong value near `value` inside [lo, hi]: the slip of a careless student."""
    choices = [v for v in (value - 2, value - 1, value + 1, value + 2) if lo <= v <= hi]
    return rng.choice(choices)


def _column_steps(a: int, b: int, op: str) -> tuple[list[tuple[str, int]], int]:
    """Per column, right to left, (left-hand side, its value), e.g. ("8+7+0", 15); and the final carry."""
    steps, c = [], 0
    if op == "add":
        da, db = _digits(a), _digits(b)
        for i in range(max(len(da), len(db))):
            x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
            s = x + y + c
            steps.append((f"{x}+{y}+{c}", s))
            c = s // 10
    elif op == "sub":  # a >= b
        da, db = _digits(a), _digits(b)
        for i in range(len(da)):
            x, y = da[i], (db[i] if i < len(db) else 0)
            borrow = int(x - y - c < 0)
            steps.append((f"{x + 10 * borrow:>2}-{y}-{c}", x + 10 * borrow - y - c))  # top shows +10 on a borrow
            c = borrow
    else:  # mul: b is one digit
        for x in _digits(a):
            p = b * x + c
            steps.append((f"{b}*{x}+{c}", p))
            c = p // 10
    return steps, c


def _step_line(rest: str, lhs: str, value: int, op: str, so_far: str) -> str:
    """One column, e.g. '494+194: 4+4+0=08, write 8, carry 0, so far    8.' Every line of a trace has the same
    width (numbers right-aligned, sums with two digits), so each digit a line needs sits at a fixed distance:
    the digits to add end what is left of the numbers at the line's start, and what is left, the carry and the
    digits so far are the line above shifted by one column. A 0.8M-parameter model with rotary positions
    learns fixed-distance look-ups in minutes; fetching digits from a varying distance it does not."""
    if op == "sub":
        borrow = int(int(lhs.split("-")[0]) >= 10)  # the top digit shows +10 when this column borrowed
        return f"{rest}: {lhs}={value}, write {value}, borrow {borrow}, so far {so_far}."
    return f"{rest}: {lhs}={value:02d}, write {value % 10}, carry {value // 10}, so far {so_far}."


def long_cot(a: int, b: int, op: str, rng: random.Random, p_error: float) -> str:
    """Column-by-column solution, one line per column at one width; with probability p_error one step is first
    wrong, then 'Wait, recheck:' and the corrected line. A final carry becomes one more column of zeros."""
    steps, final_carry = _column_steps(a, b, op)
    if final_carry:
        steps.append((f"{b}*0+{final_carry}" if op == "mul" else f"0+0+{final_carry}", final_carry))
    result = _value(a, b, op)
    sym = OPS[op]
    bad = rng.randrange(len(steps)) if rng.random() < p_error else -1
    head = {"add": "Add right to left.", "sub": "Subtract right to left.", "mul": "Multiply right to left."}[op]
    sa, sb = str(a), str(b)
    w = max(len(sa), len(sb))
    width = w + 1 if op != "sub" else w  # the digits so far, right-aligned in the widest possible result
    out, digits = [head], ""
    for i, (lhs, value) in enumerate(steps):
        left_a = sa[:max(len(sa) - i, 0)] or "0"  # what is left of a (and of b) after i columns
        left_b = sb if op == "mul" else (sb[:max(len(sb) - i, 0)] or "0")
        rest = f"{left_a:>{w}}{sym}{left_b:>{w if op != 'mul' else len(sb)}}"
        digit = value if op == "sub" else value % 10
        if i == bad:
            hi = 9 if op == "sub" else (9 * 9 + 8 if op == "mul" else 19)
            wrong = _wrong(value, rng, 0, hi)
            wrong_digits = f"{wrong if op == 'sub' else wrong % 10}{digits}"
            out.append(_step_line(rest, lhs, wrong, op, f"{wrong_digits:>{width}}"))
            out.append(RECHECK + _step_line(rest, lhs, value, op, f"{digit}{digits}".rjust(width)))
        else:
            out.append(_step_line(rest, lhs, value, op, f"{digit}{digits}".rjust(width)))
        digits = f"{digit}{digits}"
    out.append(f"So the answer is {result}.")  # the digits so far, one line up: a fixed distance again
    out.append(f"\\boxed{{{result}}}")
    return "\n".join(out)


def short_cot(a: int, b: int, op: str) -> str:
    """A plain solution: each column's result right to left, then the answer, with no layout, no digits so far
    and no rechecks: '2+6+0=8, 8+7+0=15, 4+3+1=8, so 858.\n\\boxed{858}'. Where a digit sits now depends on
    the widths of the results before it, so the look-ups that the long CoT keeps at a fixed distance vary here."""
    steps, _ = _column_steps(a, b, op)
    result = _value(a, b, op)
    work = ", ".join(f"{lhs.strip()}={value}" for lhs, value in steps)
    return f"{work}, so {result}.\n\\boxed{{{result}}}"


def is_test_problem(problem: str, test_frac: float = 0.1) -> bool:
    """Hash-based split of the problem space: the same problem text always lands in the same split."""
    h = int.from_bytes(hashlib.sha256(problem.encode()).digest()[:8], "big")
    return h < test_frac * 2 ** 64


def classroom(n: int, seed: int, split: str = "train", *, ops: str | Sequence[str] = "add", digits: int = 3,
              digits_b: int | None = None, max_digits: int | None = None, p_error: float = 0.3,
              test_frac: float = 0.1, distinct: bool = True) -> list[dict]:
    """n arithmetic problems of one split, a pure function of (seed, split, knobs).

    Rows: id, problem ("482+376=?"), answer ("858"), long_cot, short_cot, kind="math".
    Knobs: ops (add, sub, mul; mul multiplies by one digit 2..9), digits of the first operand, digits_b of the
    second (add/sub, default = digits), max_digits (a mix of sizes: each problem draws its digits uniformly from
    digits..max_digits, both operands alike unless digits_b is given), p_error (share of long traces with a
    corrected mistake), test_frac (share of the problem space reserved for the test split), distinct (no problem
    twice; False lets a large training set repeat the small sizes' problems instead of running out of them).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ops = [o.strip() for o in ops.split(",")] if isinstance(ops, str) else list(ops)
    if not ops or any(o not in OPS for o in ops):
        raise ValueError(f"ops must name some of {sorted(OPS)}, got {ops!r}")
    max_digits = digits if max_digits is None else max_digits
    if not (1 <= digits <= max_digits <= 18 and (digits_b is None or 1 <= digits_b <= 18)):
        raise ValueError(f"need 1 <= digits <= max_digits <= 18 and digits_b in 1..18, got {digits}, {max_digits}, "
                         f"{digits_b}")
    if not 0.0 <= p_error <= 1.0 or not 0.0 < test_frac < 1.0:
        raise ValueError(f"need 0 <= p_error <= 1 and 0 < test_frac < 1, got {p_error}, {test_frac}")
    rng = random.Random(f"classroom/{split}/{seed}")
    span = lambda d: (10 ** (d - 1) if d > 1 else 0, 10 ** d - 1)  # noqa: E731  (smallest, largest) d-digit number
    rows, seen, tries = [], set(), 0
    while len(rows) < n:
        tries += 1
        if tries > 50 * n + 10_000:
            raise ValueError(f"could only find {len(rows)} distinct {split} problems of {n}: "
                             f"the problem space is too small for these knobs ({ops}, digits={digits})")
        op = rng.choice(ops)
        d = digits if max_digits == digits else rng.randint(digits, max_digits)  # no draw without a mix
        a = rng.randint(*span(d))
        b = rng.randint(2, 9) if op == "mul" else rng.randint(*span(d if digits_b is None else digits_b))
        if op == "sub" and a < b:
            a, b = b, a
        problem = f"{a}{OPS[op]}{b}=?"
        if (distinct and problem in seen) or is_test_problem(problem, test_frac) != (split == "test"):
            continue
        seen.add(problem)
        answer = str(_value(a, b, op))
        rows.append({"id": f"classroom-{split}-{seed}-{len(rows)}", "problem": problem, "answer": answer,
                     "long_cot": long_cot(a, b, op, rng, p_error), "short_cot": short_cot(a, b, op),
                     "kind": "math"})
    return rows


def sft_rows(rows: Iterable[dict], cot: str = "long", tokenizer=None) -> list[dict]:
    """(prompt, response) pairs for SFT; the response is the trace without EOS (the trainer appends it)."""
    if cot not in ("long", "short"):
        raise ValueError(f"cot must be 'long' or 'short', got {cot!r}")
    return [{"id": r.get("id", str(i)), "prompt": format_prompt(r["problem"], tokenizer, r.get("options")),
             "response": r[f"{cot}_cot"], "answer": r["answer"]} for i, r in enumerate(rows)]


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------

def check_args(args) -> list[dict]:
    """Every flag of the sub-command, before any work or output (an existing --out is left untouched):
    `error: --flag: got X, expected Y`, exit status 2. Returns [] (main's rows start empty)."""
    from dist import check_writable, require as req
    if args.cmd == "classroom":
        req(args.n >= 1, "--n", args.n, "an integer >= 1")
        ops = [o.strip() for o in args.ops.split(",")]
        req(all(o in OPS for o in ops), "--ops", args.ops, f"a comma list of {', '.join(OPS)}")
        req(1 <= args.digits <= 18, "--digits", args.digits, "an integer in 1..18")
        req(args.digits_b is None or 1 <= args.digits_b <= 18, "--digits-b", args.digits_b, "an integer in 1..18")
        req(args.max_digits is None or args.digits <= args.max_digits <= 18, "--max-digits", args.max_digits,
            f"an integer in --digits ({args.digits})..18")
        req(0 <= args.p_error <= 1, "--p-error", args.p_error, "a fraction in [0, 1]")
        check_writable("--out", args.out, folder=False)
        return []
    if args.cmd == "download":
        for name in args.names:
            req(name in BENCHMARKS or args.names == ["all"], "names", name, f"'all' or some of {', '.join(BENCHMARKS)}")
        check_writable("--dest", args.dest)
        return []


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    rows = check_args(args)
    if args.cmd == "classroom":
        rows = classroom(args.n, args.seed, args.split, ops=args.ops, digits=args.digits, digits_b=args.digits_b,
                         max_digits=args.max_digits, p_error=args.p_error)
        n = write_jsonl(args.out, sft_rows(rows, cot=args.cot))
        lengths = [len(r[f"{args.cot}_cot"]) for r in rows]
        print(f"wrote {n} rows to {args.out}; {args.cot} CoT length {min(lengths)}..{max(lengths)} characters, "
              f"mean {sum(lengths) / len(lengths):.1f}")
    elif args.cmd == "download":
        names = list(BENCHMARKS) if args.names == ["all"] else args.names
        for name in names:
            print(f"wrote {download_benchmark(name, args.dest)}")


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as e:  # bad data (DataError) or no network: one clear line, no traceback
        raise SystemExit(f"error: {e}") from None
