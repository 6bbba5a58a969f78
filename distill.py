r"""Making SFT and RL data from a model: the paper's three ways (Yeo et al. 2025, Sec. 3.1, 3.3, 5.1-5.2).

Four sub-commands, each a pure pipeline function that takes `generate_fn` (the CLI builds it from model.load +
sample.generate; the tests pass a scripted stand-in), each writing OUT, OUT.stats.json (the counts of every
stage, also printed) and, while it runs, OUT.partial (the progress file it resumes from):

  reject     rejection sampling (Sec. 2.4, 3.1): n samples per prompt from a teacher, keep the ones verify.py
             accepts and that ended with EOS. How the paper builds its long-CoT (QwQ-32B-Preview) and short-CoT
             (Qwen2.5-Math-72B-Instruct) SFT sets.                            -> SFT JSONL (prompt, response)
  construct  constructed long CoT by action prompting (Sec. 3.3, App. E.8): a short-CoT model is prompted for one
             primitive action at a time (clarify, decompose, solution step, reflection, answer); a state machine
             (`next_action`) picks the next action from the last one and its parsed outcome; the trace is the
             concatenation of the actions' texts, ending in the answer's \boxed{}; kept when verify.py accepts
             the answer (rejection sampling, as for `reject`).                -> SFT JSONL (prompt, response)
             What it is for, the paper's Table 1 (Llama-3.1-8B, SFT on ~200k MATH traces of each kind, then the
             same RL): SFT on emergent long CoT (QwQ-32B-Preview, `reject`) reaches 54.1 on MATH-500 and 32.0 on
             MMLU-Pro-1k, 59.4 and 34.6 after RL; on constructed traces 48.2 and 18.1, then 52.4 and 19.2.
  extract    short answers from web QA rows (Sec. 5.2, App. E.7): a model reads a question and its free-form web
             solution and writes the short final answer in \boxed{}, or an empty box when there is none; rows
             without a non-empty box are dropped.                   -> JSONL (problem, answer, solution)
  filter     k-sample teacher agreement (Sec. 5.2): a teacher samples k responses per extracted row; a row is
             kept when at least one finished response verifies against the extracted answer.
                                     -> prompt JSONL for `ppo.py --prompts`, and with --sft-out the teacher's
                                        accepted responses as an SFT JSONL for `sft.py --data` (the paper mixes
                                        such web SFT data 50/50 with MATH, Sec. 5.1)

How to run
----------
    python distill.py reject --teacher Qwen/QwQ-32B-Preview --prompts math_train --n-samples 32 --out sft_long.jsonl
    python distill.py construct --model Qwen/Qwen2.5-72B-Instruct --prompts math_train --out constructed.jsonl
    python distill.py extract --model meta-llama/Llama-3.1-8B-Instruct --data web.jsonl --question-key question \
        --solution-key answer --out web_extracted.jsonl
    python distill.py filter --teacher Qwen/QwQ-32B-Preview --prompts web_extracted.jsonl --n-samples 2 \
        --out web_prompts.jsonl --sft-out web_sft.jsonl
    torchrun --standalone --nproc_per_node 8 distill.py construct ...    # the prompts split over ranks
    python distill.py construct --model tiny --prompts math500 --limit 4 --out /tmp/c.jsonl   # plumbing, CPU

Under torchrun each rank samples the prompts at positions rank, rank + world, ... of each batch (as eval.py
does) with its own full copy of the model (no sharding: the model must fit one device); rank 0 gathers every
batch, appends it to OUT.partial and writes OUT in prompt order. Each sample's randomness depends on its prompt's
position (and, for `construct`, the trace number and the action's turn), not on the rank, the batch or the
resume point (sample.generate's `keys`), so 1 and N ranks draw the same samples. Stopped at any point, the same
command (any number of ranks) resumes after the last finished batch; a resume with other arguments is refused.
A response (reject, filter) or an action (construct) cut off by the token limit never yields a kept row: a
cut-off trace would teach the student to stop mid-thought. (`extract` keeps a box written before the cut, and
counts the cut.)

The state machine of `construct` (our reading of the paper's Algorithm 2 and its prompt templates, App. E.8):
    clarify -> decompose -> solution step -> reflection -> (solved: answer | verified: decompose |
                                                            rejected: solution step on the new or the same goal)
The reflection's verdict (current subgoal achieved? main goal achieved? an alternative subgoal?) is parsed by
`parse_reflection`; a rejected step is retried on the reflection's alternative goal, else the same goal is
revisited (up to --max-tries times), else decompose's next alternative, else the goal is abandoned and decompose
proposes another. Every trace ends: after --max-actions actions the next one is the answer.

Departures from the paper
-------------------------
- `construct`: the authors released no code for action prompting (their README's TODO, "Release action prompting
  code"); App. E.8 gives the five action prompt templates and a control-flow sketch (Algorithm 2) in which each
  action's parsed output names the next state. Ours: the transitions above, the goal bookkeeping (done and
  abandoned subgoals, alternatives, retries), the --max-actions bound, how the actions' texts join into one
  trace, the answer action's format, n traces per prompt with rejection sampling over them, and the end of a
  trace at an action cut off by the token limit. Our prompts are written anew from the templates' content
  (App. E.8.2; also in HaoooWang/awesome-llm-prompts, meta_action_in_mcts/llama.md), with the same tags
  (<clarification>, <goal>, <sentence>, <verification>, <current_goal_achieved>, <parent_goal_achieved>,
  <new_goal>) and a two-level goal (the main goal from clarify, one current subgoal) instead of their goal tree.
  The paper samples the reflection from o1-mini (a stronger teacher); --reflect-model names any model for it
  (default: --model).
- `reject` samples at the paper's distillation settings for QwQ-32B-Preview (App. E.2: temperature 1.0, top-p
  0.95, 8,192 new tokens); keeps at most --max-per-prompt (default 1) accepted responses per prompt.
- `extract` follows App. E.7 (Llama-3.1-8B-Instruct, greedy, 512 new tokens, the last box) with our wording of
  the prompt; its chat template is the model's own.
- `filter` grades with verify.py (theirs: SymEval, the rule-based RL run reads the extracted box as the gold,
  section_5.2__scaling_up_rl_with_noisy_verifiable_data__rule_filtered.sh:91 --answer_key ref_ans_boxed); a
  response cut off by the token limit never counts as agreeing. Its sampling settings (temperature 1.0, top-p
  0.95, 8,192 tokens) are those of their distillation (App. E.2); the paper does not give the filter's.
- The teachers run on our sampler (sample.py), the authors used vLLM / SGLang; no tensor parallelism here, so a
  model must fit one device (Qwen2.5-72B-Instruct in bf16 is ~145 GB of weights: not one 80 GB GPU).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from typing import Callable, Sequence

import data
import dist

# ----------------------------------------------------------------------------------------------------------
# Arguments, one block per sub-command
# ----------------------------------------------------------------------------------------------------------
# Spellings: torchrun's parser reads abbreviated options anywhere on the line (`--n` is ambiguous there), so the
# sample count also answers to --n-samples (tests/test_dist.py checks every flag).


def _common(p, out, temperature, top_p, max_new_tokens, why):
    """The flags every sub-command has: sampling, sizes, seed, output."""
    a = p.add_argument
    a("--temperature", type=float, default=temperature, help=f"sampling temperature ({why})")
    a("--top-p", type=float, default=top_p, help=f"nucleus threshold ({why})")
    if max_new_tokens is not None:
        a("--max-new-tokens", type=int, default=max_new_tokens, help=f"tokens per response ({why})")
    a("--limit", type=int, default=None, help="use only the first K rows (smoke tests)")
    a("--batch-prompts", type=int, default=8, help="prompts per batch, all ranks: the unit of progress and resume")
    a("--seed", type=int, default=0, help="the draws are a function of (seed, prompt position), not of ranks")
    a("--kv-slots", type=int, default=0, help="sampler KV-cache slots (0: as many as fit in free memory)")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on GPU, fp32 on CPU")
    a("--out", default=out, help="output JSONL (written atomically when every prompt is done)")
    a("--stats", default=None, help="statistics JSON; default: <out>.stats.json")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=fmt)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("reject", help="rejection-sample an SFT set from a teacher", formatter_class=fmt)
    r.add_argument("--teacher", required=True, help="model name or path passed to model.load")
    r.add_argument("--prompts", default="math_train", help="benchmark name or a JSONL file with problem/answer")
    r.add_argument("--n", "--n-samples", dest="n", type=int, default=32, help="samples per prompt (paper: 32..256)")
    r.add_argument("--max-per-prompt", type=int, default=1,
                   help="keep at most k accepted responses per prompt (0: all); 1 keeps the prompt mix of the "
                        "source instead of over-weighting easy prompts, which pass most often")
    _common(r, "sft_long.jsonl", 1.0, 0.95, 8192, "the paper's QwQ-32B-Preview distillation, App. E.2")

    c = sub.add_parser("construct", help="constructed long CoT by action prompting", formatter_class=fmt)
    c.add_argument("--model", required=True, help="the short-CoT model prompted for each action (paper: "
                   "Qwen2.5-72B-Instruct)")
    c.add_argument("--reflect-model", default=None, help="model for the reflection action (paper: o1-mini, a "
                   "stronger teacher); default: --model")
    c.add_argument("--prompts", default="math_train", help="benchmark name or a JSONL file with problem/answer")
    c.add_argument("--n", "--n-samples", dest="n", type=int, default=4, help="traces per prompt (rejection "
                   "sampling over them; the paper kept ~200k traces for MATH's 7.5k prompts)")
    c.add_argument("--max-per-prompt", type=int, default=1, help="keep at most k verified traces per prompt (0: all)")
    c.add_argument("--max-actions", type=int, default=20, help="actions per trace, the answer included: every "
                   "trace ends (clarify + 6 rounds of decompose/step/reflection + answer)")
    c.add_argument("--max-tries", type=int, default=2, help="times a rejected subgoal is revisited "
                   "before decompose's alternative or a new subgoal")
    c.add_argument("--action-tokens", type=int, default=1024, help="new tokens per action (a step of a short CoT)")
    c.add_argument("--answer-tokens", type=int, default=256, help="new tokens for the answer action (one sentence)")
    _common(c, "constructed.jsonl", 0.7, 0.95, None, "App. E.2's short-CoT distillation; none given for this")

    e = sub.add_parser("extract", help="short answers in \\boxed{} from web QA rows", formatter_class=fmt)
    e.add_argument("--model", required=True, help="the extractor (paper: Llama-3.1-8B-Instruct, App. E.7)")
    e.add_argument("--data", required=True, help="JSONL of web QA rows (a question and a free-form solution each)")
    e.add_argument("--question-key", default="problem", help="the rows' question field (WebInstructSub: question)")
    e.add_argument("--solution-key", default="solution", help="the rows' solution field (WebInstructSub: answer)")
    _common(e, "web_extracted.jsonl", 0.0, 1.0, 512, "App. E.7: greedy, 512 tokens")

    f = sub.add_parser("filter", help="keep rows where >= 1 of k teacher samples matches", formatter_class=fmt)
    f.add_argument("--teacher", required=True, help="model.load name or path (paper: QwQ-32B-Preview)")
    f.add_argument("--prompts", required=True, help="JSONL with problem/answer (extract's output)")
    f.add_argument("--n", "--n-samples", dest="n", type=int, default=2, help="samples per prompt (Sec. 5.2: 2)")
    f.add_argument("--max-per-prompt", type=int, default=0, help="accepted responses per prompt in "
                   "--sft-out (0: all, as the paper's 189k responses for 115k prompts)")
    f.add_argument("--sft-out", default=None, help="also write the accepted responses: SFT JSONL")
    _common(f, "web_prompts.jsonl", 1.0, 0.95, 8192, "the paper's QwQ-32B-Preview distillation, App. E.2")
    return p


# flags that do not change what a run computes: a resume may change them (any other change is refused)
RESUME_FREE = ("out", "stats", "sft_out", "batch_prompts", "kv_slots")


# ----------------------------------------------------------------------------------------------------------
# Input rows
# ----------------------------------------------------------------------------------------------------------

def load_prompts(spec: str) -> list[dict]:
    """Rows with problem and answer: a benchmark name (data.BENCHMARKS) or a JSONL file; each gets a `kind`."""
    if spec in data.BENCHMARKS:
        return data.load_benchmark(spec)
    rows = data.load_jsonl(spec)
    for r in rows:
        r.setdefault("kind", "choice" if "options" in r else "math")
    return rows


def load_web_rows(path: str, question_key: str, solution_key: str) -> list[dict]:
    """Web QA rows as {id, problem, solution}; a missing or non-string field is a DataError naming file:line."""
    rows = []
    for i, r in enumerate(data.load_jsonl(path, required=(question_key, solution_key))):
        for key in (question_key, solution_key):
            if not isinstance(r[key], str):  # load_jsonl types only the keys it knows
                with open(path, "rb") as f:  # the line of the i-th row (load_jsonl skips blank lines)
                    line = [n for n, raw in enumerate(f, 1) if raw.strip()][i]
                raise data.DataError(f"{path}:{line}: key {key!r} should be str, got {type(r[key]).__name__}")
        rows.append({"id": r.get("id", str(i)), "problem": r[question_key], "solution": r[solution_key]})
    return rows


def problem_text(row: dict) -> str:
    """The problem as the action and extraction prompts show it (with its lettered options, if any)."""
    return row["problem"] if not row.get("options") else f"{row['problem']}\n{data.format_options(row['options'])}"


def chat(text: str, tokenizer=None) -> str:
    """An instruction as the model's prompt: its chat template's user turn when it has one, else the text."""
    if getattr(tokenizer, "chat_template", None) is None:
        return text if text.endswith("\n") else text + "\n"
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True)


def grade(grade_fn, texts: list[str], golds: list[str], kinds: list[str]) -> list[bool]:
    """verify.grade_batch (or grade_fn) as booleans; a Grade tuple is always truthy, so read .correct."""
    if not texts:
        return []
    if grade_fn is None:
        import verify
        grade_fn = verify.grade_batch
    return [bool(getattr(g, "correct", g)) for g in grade_fn(texts, golds, kinds)]


def _check_samples(samples, n_prompts: int, n: int):
    if len(samples) != n_prompts or any(len(s) != n for s in samples):
        raise ValueError(f"generate_fn returned {[len(s) for s in samples]} samples for {n_prompts} prompts, "
                         f"expected {n} each")


# ----------------------------------------------------------------------------------------------------------
# Batches over ranks, and the progress file
# ----------------------------------------------------------------------------------------------------------

def run_batches(batch_fn: Callable[[list[int]], list[dict]], n_rows: int, batch_prompts: int,
                done: Sequence[dict] = (), on_batch: Callable[[dict], None] | None = None,
                progress: bool = False) -> list[dict] | None:
    """One record per row, in row order: batch_fn(positions) -> a JSON record per position.

    The rows are taken in batches of batch_prompts (over all ranks); each rank runs batch_fn on its positions
    of the batch (p % world == rank, as eval.py splits questions), rank 0 gathers them and passes the batch's
    record {"start": first position, "records": [...]} to on_batch (the CLI appends it to OUT.partial). done:
    such batch records of an earlier, interrupted run (every rank passes them); their rows are skipped.
    Returns every row's record on rank 0, None on the other ranks."""
    records = [r for rec in done for r in rec["records"]]
    bar = None
    if progress and dist.rank() == 0:
        from tqdm import tqdm
        bar = tqdm(total=n_rows, initial=len(records), unit="prompt", desc="prompts", dynamic_ncols=True)
    for start in range(len(records), n_rows, batch_prompts):
        end = min(start + batch_prompts, n_rows)
        mine = [p for p in range(start, end) if p % dist.world() == dist.rank()]
        out = batch_fn(mine) if mine else []
        if len(out) != len(mine):
            raise ValueError(f"batch_fn returned {len(out)} records for {len(mine)} prompts")
        parts = dist.gather_objects(list(zip(mine, out)))  # every rank, every batch: the gathers pair up
        if dist.rank() == 0:
            batch = [r for _, r in sorted((pr for part in parts for pr in part), key=lambda pr: pr[0])]
            records += batch
            if on_batch is not None:
                on_batch({"start": start, "records": batch})
        if bar is not None:
            bar.update(end - start)
    if bar is not None:
        bar.close()
    return records if dist.rank() == 0 else None


def progress_file(path: str, header: dict, write: bool = True) -> list[dict]:
    """The batches an interrupted run finished. OUT.partial is JSONL: a header line {"distill": sub-command, "args":
    the arguments that shape the output}, then one record per finished batch (run_batches' on_batch). Created
    when absent (write=False: rank > 0 only reads); refused (exit 2) when made by another sub-command or with
    other arguments; a torn last line (killed mid-write) is dropped."""
    if not os.path.exists(path):
        if write:
            dist.write_atomic(path, json.dumps(header) + "\n")
        return []
    try:
        rows, torn = dist.read_log(path)
    except ValueError as e:
        dist.arg_error("--out", f"{e}: delete {path} to start over")
    if not rows or not isinstance(rows[0], dict) or rows[0].keys() != header.keys():
        dist.arg_error("--out", f"{path}: not a distill.py progress file (no header line): delete it to start over")
    if rows[0]["distill"] != header["distill"]:
        dist.arg_error("--out", f"{path} holds an unfinished `distill.py {rows[0]['distill']}` run: run it again to "
                                f"finish it, or delete {path} to start over")
    if rows[0] != header:
        old = rows[0]["args"]
        diff = "; ".join(f"--{k.replace('_', '-')}: {old.get(k)!r} -> {v!r}"
                         for k, v in header["args"].items() if old.get(k) != v)
        dist.arg_error("--out", f"{path} holds an unfinished run made with other arguments ({diff}): run it again "
                                f"with those to resume it, or delete {path} to start over")
    if torn is not None and write:
        print(f"{path}: dropped a torn last line (killed while writing it)", flush=True)
        dist.write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows[1:]


# ----------------------------------------------------------------------------------------------------------
# reject: rejection sampling
# ----------------------------------------------------------------------------------------------------------

def pass_rate_histogram(n_accepted: Sequence[int], n: int) -> dict[str, int]:
    """Prompts per pass-rate bin: '0' (none accepted), then tenths '(0.0,0.1]' ... '(0.9,1.0]'."""
    hist = {"0": 0} | {f"({k / 10:.1f},{(k + 1) / 10:.1f}]": 0 for k in range(10)}
    keys = list(hist)
    for c in n_accepted:
        # bin k holds pass rates in (k/10, (k+1)/10]: k = ceil(10c/n) - 1, in integers
        hist[keys[0 if c == 0 else (10 * c + n - 1) // n]] += 1
    return hist


def distill_stats(n_accepted: Sequence[int], n: int, kept_tokens: Sequence[int], n_truncated: int) -> dict:
    """Summary of a rejection-sampling run from per-prompt accepted counts and the kept responses' token lengths."""
    prompts = len(n_accepted)
    return {
        "prompts": prompts, "samples_per_prompt": n, "samples": prompts * n,
        "accepted": int(sum(n_accepted)), "truncated": n_truncated,
        "mean_pass_rate": sum(n_accepted) / (prompts * n) if prompts else 0.0,
        "prompts_with_kept": sum(c > 0 for c in n_accepted),
        "kept": len(kept_tokens),
        "mean_kept_tokens": sum(kept_tokens) / len(kept_tokens) if kept_tokens else 0.0,
        "pass_rate_hist": pass_rate_histogram(n_accepted, n),
    }


def reject_batch(generate_fn, rows: Sequence[dict], positions: list[int], n: int, *, tokenizer=None,
                 max_per_prompt: int | None = 1, grade_fn=None) -> list[dict]:
    """n samples for each prompt at `positions`; per prompt the record {"n_accepted", "n_truncated", "kept"}.

    A sample is accepted when it verifies and ended with EOS; the first max_per_prompt (None: all) accepted ones
    are kept, in sampling order (not by length: no bias towards short answers), as SFT rows {id, problem, answer,
    prompt, response, n_tokens}; n_tokens is len(token_ids), which counts the EOS token (sample.py includes it)."""
    batch = [rows[p] for p in positions]
    prompts = [data.format_prompt(r["problem"], tokenizer, r.get("options")) for r in batch]
    samples = generate_fn(prompts, n, keys=list(positions))
    _check_samples(samples, len(batch), n)
    flat = [s for per_prompt in samples for s in per_prompt]
    ok = grade(grade_fn, [s.text for s in flat], [r["answer"] for r in batch for _ in range(n)],
               [r.get("kind", "math") for r in batch for _ in range(n)])
    records = []
    for j, (pos, row, prompt) in enumerate(zip(positions, batch, prompts)):
        accepted, truncated, kept = 0, 0, []
        for s, good in zip(samples[j], ok[j * n:(j + 1) * n]):
            truncated += s.finish_reason == "length"
            if not good or s.finish_reason != "eos":
                continue
            accepted += 1
            if max_per_prompt is None or accepted <= max_per_prompt:
                kept.append({"id": row.get("id", str(pos)), "problem": row["problem"], "answer": row["answer"],
                             "prompt": prompt, "response": s.text, "n_tokens": len(s.token_ids)})
        records.append({"n_accepted": accepted, "n_truncated": truncated, "kept": kept})
    return records


def reject_stats(records: Sequence[dict], n: int) -> dict:
    kept = [r for rec in records for r in rec["kept"]]
    return distill_stats([rec["n_accepted"] for rec in records], n, [r["n_tokens"] for r in kept],
                         sum(rec["n_truncated"] for rec in records))


def reject(generate_fn, rows: Sequence[dict], n: int, *, tokenizer=None, max_per_prompt: int | None = 1,
           grade_fn=None, batch_prompts: int = 8, done: Sequence[dict] = (), on_batch=None, progress=False):
    """Sample n responses per problem, keep at most max_per_prompt (None: all) that the verifier accepts.

    generate_fn(prompts, n, keys=...) -> per prompt a list of n samples with .text, .token_ids, .finish_reason;
    keys are the prompts' positions in rows. grade_fn(texts, golds, kinds) -> per text a bool or an object
    with .correct (default verify.grade_batch). done / on_batch: resuming, see run_batches.
    Returns (kept rows, statistics as in distill_stats) on rank 0, (None, None) on the other ranks."""
    if n < 1 or (max_per_prompt is not None and max_per_prompt < 1) or batch_prompts < 1:
        raise ValueError(f"n, max_per_prompt and batch_prompts must be >= 1, got {n}, {max_per_prompt}, "
                         f"{batch_prompts}")
    records = run_batches(lambda pos: reject_batch(generate_fn, rows, pos, n, tokenizer=tokenizer,
                                                   max_per_prompt=max_per_prompt, grade_fn=grade_fn),
                          len(rows), batch_prompts, done, on_batch, progress)
    if records is None:
        return None, None
    return [r for rec in records for r in rec["kept"]], reject_stats(records, n)


def print_stats(stats: dict, file=None) -> None:
    """Human-readable rejection-sampling summary with a text histogram of per-prompt pass rates."""
    file = file or sys.stdout
    print(f"prompts {stats['prompts']}, samples {stats['samples']}, accepted {stats['accepted']} "
          f"(mean pass rate {stats['mean_pass_rate']:.3f}), truncated {stats['truncated']}", file=file)
    print(f"kept {stats['kept']} responses for {stats['prompts_with_kept']} prompts, "
          f"mean {stats['mean_kept_tokens']:.1f} tokens", file=file)
    print_hist(stats["pass_rate_hist"], "pass rate", file)


def print_hist(hist: dict, label: str, file=None) -> None:
    top = max(hist.values(), default=0) or 1
    for k, v in hist.items():
        print(f"  {label} {k:>10} {v:6d} {'#' * round(40 * v / top)}", file=file or sys.stdout)


# ----------------------------------------------------------------------------------------------------------
# construct: long CoT by action prompting (paper Sec. 3.3, App. E.8)
# ----------------------------------------------------------------------------------------------------------
# Each prompt below is ours, written from the content of the paper's templates (App. E.8.2): what the action
# asks for, the tags its answer comes in. {solution} is the trace so far (the actions' texts, joined).

CLARIFY = """You are an expert mathematics teacher. Before solving anything, restate the problem below in a few \
short sentences so that its meaning is unambiguous: what exactly is asked, which assumptions and constraints \
hold, and where a reader could misread it. Do not solve it yet.

<problem>
{problem}
</problem>

Answer in this format:
<clarification>
your restatement
</clarification>
<goal>
one sentence naming what has to be found, e.g. "Find the value of x."
</goal>"""

DECOMPOSE = """You are an expert mathematics teacher in the middle of solving a problem; the work so far is below. \
Propose the next subgoal: one small step that brings the work closer to the main goal. Do not repeat a subgoal \
that is already done, do not propose checking or verifying, and do not suggest a computer or other tools.

<problem>
{problem}
</problem>
<main goal>
{goal}
</main goal>
<subgoals done>
{done}
</subgoals done>
<work so far>
{solution}
</work so far>

Answer in this format:
<thinking>
think step by step about which subgoal should come next, and which other subgoals could also work
</thinking>
<sentence>
the subgoal, in one sentence, phrased as a tentative idea to yourself
</sentence>
<sentence>
a different subgoal, in one sentence starting with "Alternatively,"
</sentence>
<sentence>
another different subgoal, in one sentence starting with "Alternatively,"
</sentence>"""

SOLUTION_STEP = """You are a meticulous, nitpicking mathematics teacher in the middle of solving a problem; the \
work so far is below. Carry out the current subgoal and nothing more. Be brief: write out the equations and \
numbers and compute them, rather than describing what you would do. Do not solve the rest of the problem and do \
not redo the calculations of the previous step.

<problem>
{problem}
</problem>
<current subgoal>
{current}
</current subgoal>
<work so far>
{solution}
</work so far>
<previous step>
{prior_step}
</previous step>"""

REFLECTION = """You are an expert mathematics teacher in the middle of solving a problem; the work so far is \
below. Check whether its last step achieved the current subgoal, and whether the main goal has been reached.

<problem>
{problem}
</problem>
<main goal>
{goal}
</main goal>
<current subgoal>
{current}
</current subgoal>
<work so far>
{solution}
</work so far>
<subgoals done>
{done}
</subgoals done>
<subgoals abandoned>
{abandoned}
</subgoals abandoned>

Answer in this format:
<verification>
a quick check of the last step by another route than the one it took: an easier method, substituting values \
back, or working backwards from the result. Write it as your own reflection while solving, briefly, without a \
computer, and end by restating the result the work has reached (do not compute it if it has not been reached)
</verification>
<current_goal_achieved>
true or false: the step is correct and achieves the current subgoal
</current_goal_achieved>
<parent_goal_achieved>
true or false: the main goal has been reached
</parent_goal_achieved>
<new_goal>
only when the step is wrong or the subgoal is not achieved: another subgoal in one sentence starting with \
"Alternatively,", clearly different from the subgoals done or abandoned; otherwise leave this empty
</new_goal>"""

ANSWER = """Below are a problem and worked reasoning about it. State the final answer the reasoning reached, in \
one short sentence that ends with the answer inside \\boxed{{}}, e.g. "So the final answer is \\boxed{{42}}." \
{format}Do not solve the problem again.

<problem>
{problem}
</problem>
<reasoning>
{solution}
</reasoning>"""

ACTIONS = ("clarify", "decompose", "solution_step", "reflection", "answer")
TEMPLATES = dict(zip(ACTIONS, (CLARIFY, DECOMPOSE, SOLUTION_STEP, REFLECTION, ANSWER)))


def tag(text: str, name: str) -> str | None:
    """The stripped contents of the first <name>...</name> in text (to the end when it is not closed), or None."""
    m = re.search(rf"<{re.escape(name)}>(.*?)(?:</{re.escape(name)}>|\Z)", text, re.S)
    return m.group(1).strip() if m else None


def tags(text: str, name: str) -> list[str]:
    """The stripped, non-empty contents of every closed <name>...</name> in text, in order."""
    found = (m.strip() for m in re.findall(rf"<{re.escape(name)}>(.*?)</{re.escape(name)}>", text, re.S))
    return [m for m in found if m]


FORMAT_TAGS = ("clarification", "goal", "thinking", "sentence", "verification", "current_goal_achieved",
               "parent_goal_achieved", "new_goal")


def strip_tags(text: str) -> str:
    """The text without the answer formats' tag markers (<goal>, </sentence>, ...; "x<y>z" stays): the thought of
    an answer that ignored its format."""
    return re.sub(rf"</?(?:{'|'.join(FORMAT_TAGS)})>", "", text).strip()


def _truth(value: str | None) -> bool | None:
    """'true' / 'false' (any case, trailing words allowed) -> True / False; anything else -> None."""
    word = (value or "").strip().lower()
    return True if word.startswith("true") else False if word.startswith("false") else None


def parse_clarify(text: str) -> dict:
    """{"thought": the clarification (the whole text when untagged), "goal": the goal sentence or None}."""
    clar = tag(text, "clarification")
    return {"thought": clar if clar else strip_tags(text), "goal": tag(text, "goal") or None}


def parse_decompose(text: str) -> dict:
    """{"thought": the candidate subgoals as one paragraph, "subgoals": [first choice, alternatives...]}."""
    subgoals = tags(text, "sentence")
    return {"thought": " ".join(subgoals) if subgoals else strip_tags(text), "subgoals": subgoals}


def parse_reflection(text: str) -> dict:
    """{"outcome": "solved" | "verified" | "rejected", "thought", "new_goal"}.

    solved: the main goal is reached (and the step is not called wrong); verified: the current subgoal is
    achieved; rejected: otherwise, also when the verdict cannot be read (an unverified step is not built on).
    The thought is the verification, followed on a rejection by the proposed new goal ("Alternatively, ...")."""
    current, parent = _truth(tag(text, "current_goal_achieved")), _truth(tag(text, "parent_goal_achieved"))
    verification = tag(text, "verification")
    thought = verification if verification else strip_tags(text)
    new_goal = tag(text, "new_goal") or None
    if parent and current is not False:
        outcome = "solved"
    elif current:
        outcome = "verified"
    else:
        outcome = "rejected"
        if new_goal:
            thought = f"{thought}\n{new_goal}"
    return {"outcome": outcome, "thought": thought, "new_goal": new_goal if outcome == "rejected" else None}


def parse_answer(text: str) -> dict:
    """{"outcome": "boxed" | "no_box", "thought": the text, "answer": contents of its last non-empty box or None}."""
    box = data.last_boxed(text)
    return {"outcome": "boxed" if box else "no_box", "thought": text.strip(), "answer": box or None}


PARSE = {"clarify": parse_clarify, "decompose": parse_decompose, "solution_step": lambda t: {"thought": t.strip()},
         "reflection": parse_reflection, "answer": parse_answer}


def new_state(problem: str, max_actions: int = 20, max_tries: int = 2) -> dict:
    """A trace before its first action (JSON: traces are stored in the progress file)."""
    return {"problem": problem, "goal": problem, "current": None, "done": [], "abandoned": [], "alternatives": [],
            "tries": 0, "actions": [], "thoughts": [], "prior_step": "", "rejected": 0, "solved": False,
            "answer": None, "max_actions": max_actions, "max_tries": max_tries}


def trace_text(state: dict) -> str:
    """The chain of thought so far: the actions' texts, one paragraph each."""
    return "\n\n".join(state["thoughts"])


def action_prompt(action: str, state: dict, options: bool = False) -> str:
    """The instruction for `action` in this state (before the chat template)."""
    bullets = lambda xs: "\n".join(f"- {x}" for x in xs) or "(none)"  # noqa: E731
    fmt = "For a multiple-choice problem the box holds the letter of the option. " if options else ""
    return TEMPLATES[action].format(problem=state["problem"], goal=state["goal"], current=state["current"],
                                    solution=trace_text(state) or "(nothing yet)", done=bullets(state["done"]),
                                    abandoned=bullets(state["abandoned"]),
                                    prior_step=state["prior_step"] or "(none)", format=fmt)


def advance(state: dict, action: str, text: str) -> str:
    """Record one action's output in the state (its thought appended to the trace, the goals updated) and return
    its outcome: "ok" (clarify, decompose, solution step), the reflection's verdict, or the answer's "boxed" /
    "no_box". After a rejected step the current goal becomes the reflection's new goal, else the same goal is
    revisited (max_tries times), else decompose's next alternative, else none (decompose proposes another)."""
    parsed = PARSE[action](text)
    state["actions"].append(action)
    state["thoughts"].append(parsed["thought"])
    outcome = parsed.get("outcome", "ok")
    if action == "clarify":
        state["goal"] = parsed["goal"] or state["goal"]
    elif action == "decompose":
        subgoals = parsed["subgoals"] or [state["goal"]]  # nothing proposed: work on the main goal itself
        state["current"], state["alternatives"], state["tries"] = subgoals[0], subgoals[1:], 0
    elif action == "solution_step":
        state["prior_step"] = parsed["thought"]
    elif action == "reflection":
        if outcome in ("solved", "verified"):
            state["done"].append(state["current"])
            state["current"], state["alternatives"], state["tries"] = None, [], 0
            state["solved"] = outcome == "solved"
        else:
            state["rejected"] += 1
            if parsed["new_goal"]:
                state["abandoned"].append(state["current"])
                state["current"], state["tries"] = parsed["new_goal"], 0
            elif state["tries"] < state["max_tries"]:
                state["tries"] += 1  # the same subgoal, revisited
            else:
                state["abandoned"].append(state["current"])
                state["current"] = state["alternatives"].pop(0) if state["alternatives"] else None
                state["tries"] = 0
    elif action == "answer":
        state["answer"] = parsed["answer"]
    return outcome


def next_action(last: str | None, outcome: str | None, state: dict) -> str | None:
    """The state machine: the action after `last` (None: the trace has not started) given its outcome and the
    state after it; None when the trace is complete (after the answer). The answer is forced once the trace
    holds max_actions - 1 actions, so every trace ends within max_actions."""
    if last == "answer":
        return None
    if len(state["actions"]) >= state["max_actions"] - 1:
        return "answer"
    if last is None:
        return "clarify"
    if last in ("clarify", "decompose", "solution_step"):
        return {"clarify": "decompose", "decompose": "solution_step", "solution_step": "reflection"}[last]
    if last != "reflection":
        raise ValueError(f"unknown action {last!r}; expected one of {ACTIONS}")
    if outcome == "solved":
        return "answer"
    if outcome == "verified" or state["current"] is None:  # next subgoal (or a fresh one after giving up)
        return "decompose"
    return "solution_step"  # rejected: the new goal, or the same one again


def construct_batch(generate_fn, rows: Sequence[dict], positions: list[int], n: int, *, reflect_fn=None,
                    tokenizer=None, grade_fn=None, max_actions: int = 20, max_tries: int = 2,
                    action_tokens: int = 1024, answer_tokens: int = 256, max_per_prompt: int | None = 1,
                    reflect_tokenizer=None) -> list[dict]:
    """n action-prompted traces for each prompt at `positions`, run side by side: at each turn every unfinished
    trace takes one action, one generate call per kind of action. Per prompt the record {"traces": [{"outcome":
    "kept" | "wrong" | "no_box" | "truncated", "actions", "rejected", "forced", "chars"}], "kept": [SFT rows]}.
    generate_fn(prompts, 1, keys=, turn=, max_new_tokens=): a trace's key is position * n + its number, and
    turn the action's index in the trace, so each draw depends only on (trace, turn)."""
    jobs = [(pos, k) for pos in positions for k in range(n)]
    states = [new_state(problem_text(rows[pos]), max_actions, max_tries) for pos, _ in jobs]
    action: list[str | None] = [next_action(None, None, s) for s in states]
    end: list[str | None] = [None] * len(jobs)
    turn = 0
    while any(a is not None for a in action):
        now = list(action)  # this turn's actions (the loop below moves `action` on)
        for name in ACTIONS:
            idx = [i for i, a in enumerate(now) if a == name]
            if not idx:
                continue
            other = name == "reflection" and reflect_fn is not None  # the reflection's own model, if any
            tok = reflect_tokenizer if other and reflect_tokenizer is not None else tokenizer
            prompts = [chat(action_prompt(name, states[i], bool(rows[jobs[i][0]].get("options"))), tok)
                       for i in idx]
            fn = reflect_fn if other else generate_fn
            outs = fn(prompts, 1, keys=[jobs[i][0] * n + jobs[i][1] for i in idx], turn=turn,
                      max_new_tokens=answer_tokens if name == "answer" else action_tokens)
            _check_samples(outs, len(idx), 1)
            for i, (s,) in zip(idx, outs):
                if s.finish_reason == "length":  # cut off: the trace ends here, unused
                    states[i]["actions"].append(name)
                    end[i], action[i] = "truncated", None
                    continue
                outcome = advance(states[i], name, s.text)
                action[i] = next_action(name, outcome, states[i])
                if action[i] is None:
                    end[i] = outcome
        turn += 1
    boxed = [i for i, e in enumerate(end) if e == "boxed"]
    ok = grade(grade_fn, [trace_text(states[i]) for i in boxed], [rows[jobs[i][0]]["answer"] for i in boxed],
               [rows[jobs[i][0]].get("kind", "math") for i in boxed])
    for i, good in zip(boxed, ok):
        end[i] = "kept" if good else "wrong"
    records = {pos: {"traces": [], "kept": []} for pos in positions}
    for i, ((pos, _), s) in enumerate(zip(jobs, states)):
        rec, row = records[pos], rows[pos]
        rec["traces"].append({"outcome": end[i], "actions": s["actions"], "rejected": s["rejected"],
                              "forced": end[i] != "truncated" and not s["solved"],
                              "chars": len(trace_text(s))})
        if end[i] == "kept" and (max_per_prompt is None or len(rec["kept"]) < max_per_prompt):
            rec["kept"].append({"id": row.get("id", str(pos)), "problem": row["problem"], "answer": row["answer"],
                                "prompt": data.format_prompt(row["problem"], tokenizer, row.get("options")),
                                "response": trace_text(s), "actions": s["actions"]})
    return [records[pos] for pos in positions]


def construct_stats(records: Sequence[dict], n: int) -> dict:
    traces = [t for rec in records for t in rec["traces"]]
    kept = [r for rec in records for r in rec["kept"]]
    outcomes = {k: sum(t["outcome"] == k for t in traces) for k in ("kept", "wrong", "no_box", "truncated")}
    actions = {a: sum(t["actions"].count(a) for t in traces) for a in ACTIONS}
    return {"prompts": len(records), "traces_per_prompt": n, "traces": len(traces), "outcomes": outcomes,
            "actions": actions, "rejected_steps": sum(t["rejected"] for t in traces),
            "forced_answers": sum(t["forced"] for t in traces),
            "mean_actions": sum(len(t["actions"]) for t in traces) / len(traces) if traces else 0.0,
            "prompts_with_kept": sum(bool(rec["kept"]) for rec in records), "kept": len(kept),
            "mean_kept_chars": sum(len(r["response"]) for r in kept) / len(kept) if kept else 0.0,
            "pass_rate_hist": pass_rate_histogram(
                [sum(t["outcome"] == "kept" for t in rec["traces"]) for rec in records], n)}


def construct(generate_fn, rows: Sequence[dict], n: int = 1, *, reflect_fn=None, reflect_tokenizer=None,
              tokenizer=None, grade_fn=None, max_actions: int = 20, max_tries: int = 2, action_tokens: int = 1024,
              answer_tokens: int = 256, max_per_prompt: int | None = 1, batch_prompts: int = 8,
              done: Sequence[dict] = (), on_batch=None, progress=False):
    """Constructed long CoT: n action-prompted traces per problem (construct_batch), kept when the verifier
    accepts the answer. Returns (kept SFT rows {id, problem, answer, prompt, response, actions}, statistics) on
    rank 0, (None, None) elsewhere; done / on_batch: resuming, see run_batches."""
    if n < 1 or max_actions < 2 or max_tries < 0 or batch_prompts < 1:
        raise ValueError(f"need n >= 1, max_actions >= 2, max_tries >= 0, batch_prompts >= 1; got {n}, "
                         f"{max_actions}, {max_tries}, {batch_prompts}")
    records = run_batches(lambda pos: construct_batch(
        generate_fn, rows, pos, n, reflect_fn=reflect_fn, reflect_tokenizer=reflect_tokenizer, tokenizer=tokenizer,
        grade_fn=grade_fn,
        max_actions=max_actions, max_tries=max_tries, action_tokens=action_tokens, answer_tokens=answer_tokens,
        max_per_prompt=max_per_prompt), len(rows), batch_prompts, done, on_batch, progress)
    if records is None:
        return None, None
    return [r for rec in records for r in rec["kept"]], construct_stats(records, n)


# ----------------------------------------------------------------------------------------------------------
# extract: short answers from web QA rows (paper Sec. 5.2, App. E.7)
# ----------------------------------------------------------------------------------------------------------

EXTRACT = """Below are a problem and a solution to it found on the web.

Problem: {problem}

Solution: {solution}

Read both and give the solution's final answer in a short form that can be checked easily, as "The final answer \
is $\\boxed{{...}}$".
- A mathematical answer goes in LaTeX, e.g. "The final answer is $\\boxed{{\\frac{{1}}{{2}}}}$".
- A yes/no or true/false answer is True or False, e.g. "The final answer is $\\boxed{{True}}$".
- When the problem has no short final answer (a proof, an explanation, an essay), leave the box empty: "The \
final answer is $\\boxed{{}}$"."""


def extract_batch(generate_fn, rows: Sequence[dict], positions: list[int], *, tokenizer=None) -> list[dict]:
    """One greedy extraction per row; per row {"status": "extracted" | "empty" | "no_box", "truncated", "row"}.
    The answer is the last \boxed{} of the output (App. E.7); "row" is {id, problem, answer, solution, kind}
    when a non-empty answer was extracted, else None."""
    batch = [rows[p] for p in positions]
    prompts = [chat(EXTRACT.format(problem=r["problem"], solution=r["solution"]), tokenizer) for r in batch]
    outs = generate_fn(prompts, 1, keys=list(positions))
    _check_samples(outs, len(batch), 1)
    records = []
    for row, (s,) in zip(batch, outs):
        box = data.last_boxed(s.text)
        status = "extracted" if box else "empty" if box is not None else "no_box"
        records.append({"status": status, "truncated": s.finish_reason == "length",
                        "row": {"id": row["id"], "problem": row["problem"], "answer": box,
                                "solution": row["solution"], "kind": "math"} if box else None})
    return records


def extract_stats(records: Sequence[dict]) -> dict:
    count = lambda k: sum(r["status"] == k for r in records)  # noqa: E731
    return {"rows_in": len(records), "extracted": count("extracted"), "empty_box": count("empty"),
            "no_box": count("no_box"), "truncated": sum(r["truncated"] for r in records), "kept": count("extracted")}


def extract(generate_fn, rows: Sequence[dict], *, tokenizer=None, batch_prompts: int = 8, done=(), on_batch=None,
            progress=False):
    """Short answers for web QA rows ({id, problem, solution}); rows without one (an empty box, or none) are
    dropped. Returns (kept rows {id, problem, answer, solution, kind}, statistics) on rank 0, (None, None)
    elsewhere."""
    records = run_batches(lambda pos: extract_batch(generate_fn, rows, pos, tokenizer=tokenizer), len(rows),
                          batch_prompts, done, on_batch, progress)
    if records is None:
        return None, None
    return [r["row"] for r in records if r["row"] is not None], extract_stats(records)


# ----------------------------------------------------------------------------------------------------------
# filter: k-sample teacher agreement (paper Sec. 5.2)
# ----------------------------------------------------------------------------------------------------------

def agreement_filter(generate_fn, rows: Sequence[dict], n: int = 2, *, tokenizer=None,
                     max_per_prompt: int | None = None, grade_fn=None, batch_prompts: int = 8, done=(),
                     on_batch=None, progress=False):
    """Keep a row when at least one of n teacher samples verifies against its (extracted) answer and ended with
    EOS (reject_batch's acceptance). Returns (prompt rows: the kept input rows with kind and n_match, for
    ppo.py --prompts; SFT rows: the accepted responses, at most max_per_prompt per row (None: all), for sft.py
    --data; statistics: distill_stats plus rows_in, rows_kept) on rank 0, (None, None, None) elsewhere."""
    if n < 1 or (max_per_prompt is not None and max_per_prompt < 1) or batch_prompts < 1:
        raise ValueError(f"n, max_per_prompt and batch_prompts must be >= 1, got {n}, {max_per_prompt}, "
                         f"{batch_prompts}")
    records = run_batches(lambda pos: reject_batch(generate_fn, rows, pos, n, tokenizer=tokenizer,
                                                   max_per_prompt=max_per_prompt, grade_fn=grade_fn),
                          len(rows), batch_prompts, done, on_batch, progress)
    if records is None:
        return None, None, None
    kept = [{**row, "kind": row.get("kind", "math"), "n_match": rec["n_accepted"]}
            for row, rec in zip(rows, records) if rec["n_accepted"] > 0]
    stats = {"rows_in": len(rows), "rows_kept": len(kept)} | reject_stats(records, n)
    return kept, [r for rec in records for r in rec["kept"]], stats


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------

def check_args(args) -> list[dict]:
    """Every flag, before any model loads or any output (an existing --out is left untouched): `error: --flag:
    got X, expected Y`, exit status 2. Reads the input rows (a bad file: its path and line) and returns them."""
    req = dist.require
    if hasattr(args, "n"):
        req(args.n >= 1, "--n-samples", args.n, "an integer >= 1 (samples per prompt)")
    if hasattr(args, "max_per_prompt"):
        req(args.max_per_prompt >= 0, "--max-per-prompt", args.max_per_prompt, "an integer >= 0 (0: all)")
    req(args.temperature >= 0, "--temperature", args.temperature, ">= 0 (0: greedy)")
    req(0 < args.top_p <= 1, "--top-p", args.top_p, "a number in (0, 1]")
    for flag in ("max_new_tokens", "action_tokens", "answer_tokens"):
        if hasattr(args, flag):
            req(getattr(args, flag) >= 1, "--" + flag.replace("_", "-"), getattr(args, flag), "an integer >= 1")
    if args.cmd == "construct":
        req(args.max_actions >= 2, "--max-actions", args.max_actions, "an integer >= 2 (clarify ... answer)")
        req(args.max_tries >= 0, "--max-tries", args.max_tries, "an integer >= 0")
    req(args.limit is None or args.limit >= 1, "--limit", args.limit, "an integer >= 1")
    req(args.batch_prompts >= 1, "--batch-prompts", args.batch_prompts, "an integer >= 1")
    req(args.kv_slots >= 0, "--kv-slots", args.kv_slots, "an integer >= 0 (0: as many as fit)")
    flag, spec = ("--data", args.data) if args.cmd == "extract" else ("--prompts", args.prompts)
    try:
        rows = (load_web_rows(spec, args.question_key, args.solution_key) if args.cmd == "extract"
                else load_prompts(spec))[:args.limit]
    except data.DataError as e:
        dist.arg_error(flag, str(e))
    req(rows, flag, spec, "a non-empty file of rows" if args.cmd == "extract" else "a non-empty problem set")
    outs = [("--out", args.out), ("--stats", args.stats or f"{args.out}.stats.json")]
    if getattr(args, "sft_out", None):
        outs.append(("--sft-out", args.sft_out))
    for name, path in outs:
        req(not os.path.exists(spec) or not os.path.exists(path) or not os.path.samefile(spec, path), name, path,
            f"a file other than the input {flag} (it is replaced at the end)")
        dist.check_writable(name, path, folder=False)
    return rows


def load_generate(name: str, args, device, dtype, progress: bool):
    """(generate_fn, tokenizer) for a model name: model.load onto this rank's device, then sample.generate with
    the sub-command's sampling flags. generate_fn(prompts, n, keys, turn=0, max_new_tokens=None): seed is
    --seed + turn, keys the global ids of the prompts (the draws do not depend on batching or ranks)."""
    import model as model_lib  # imported here: the pipelines above never need the sampler
    import sample as sample_lib
    net, tok = model_lib.load(name, dtype=dtype, device=device)

    def generate(prompts, n, keys, turn=0, max_new_tokens=None):
        return sample_lib.generate(net, tok, prompts, n=n, temperature=args.temperature, top_p=args.top_p,
                                   max_new_tokens=max_new_tokens or getattr(args, "max_new_tokens", None) or 1,
                                   seed=args.seed + turn, keys=keys, batch_size=args.kv_slots, progress=progress)
    return generate, tok


def print_counts(stats: dict, file=None) -> None:
    """The counts of a construct / extract / filter run, one line each (nested counts on one line)."""
    for k, v in stats.items():
        if k != "pass_rate_hist":
            print(f"  {k:<18} {json.dumps(v) if isinstance(v, dict) else round(v, 3) if isinstance(v, float) else v}",
                  file=file or sys.stdout)
    if "pass_rate_hist" in stats:
        print_hist(stats["pass_rate_hist"], "pass rate", file)


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    rows = check_args(args)
    rank, world, device = dist.init()
    dtype = dist.compute_dtype(args.dtype, device)
    # Crash-safe: each finished batch is appended to OUT.partial (fsync'd, by rank 0); a run stopped at any point
    # resumes there with the same arguments, and the outputs are replaced (atomically) only when every row is done.
    partial = f"{args.out}.partial"
    header = {"distill": args.cmd, "args": {k: v for k, v in vars(args).items() if k not in RESUME_FREE + ("cmd",)}}
    done = progress_file(partial, header, write=rank == 0)
    if done:
        dist.print0(f"{partial}: resuming after {sum(len(r['records']) for r in done)} of {len(rows)} prompts")
    name = args.teacher if args.cmd in ("reject", "filter") else args.model
    long_calls = args.cmd in ("reject", "filter") and rank == 0  # a bar per generate call only where calls are long
    generate, tok = load_generate(name, args, device, dtype, long_calls)
    kw = dict(batch_prompts=args.batch_prompts, done=done, progress=rank == 0)
    cap = (args.max_per_prompt or None) if hasattr(args, "max_per_prompt") else None  # 0: all
    sft_rows = None
    with open(partial, "a", encoding="utf-8") if rank == 0 else contextlib.nullcontext() as f:
        def on_batch(record):  # rank 0 only (run_batches)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        kw["on_batch"] = on_batch
        if args.cmd == "reject":
            out_rows, stats = reject(generate, rows, args.n, tokenizer=tok, max_per_prompt=cap, **kw)
        elif args.cmd == "construct":
            reflect, reflect_tok = None, None
            if args.reflect_model and args.reflect_model != args.model:
                reflect, reflect_tok = load_generate(args.reflect_model, args, device, dtype, False)
            out_rows, stats = construct(generate, rows, args.n, reflect_fn=reflect, reflect_tokenizer=reflect_tok,
                                        tokenizer=tok,
                                        max_actions=args.max_actions, max_tries=args.max_tries,
                                        action_tokens=args.action_tokens, answer_tokens=args.answer_tokens,
                                        max_per_prompt=cap, **kw)
        elif args.cmd == "extract":
            out_rows, stats = extract(generate, rows, tokenizer=tok, **kw)
        else:
            out_rows, sft_rows, stats = agreement_filter(generate, rows, args.n, tokenizer=tok, max_per_prompt=cap,
                                                         **kw)
    if rank == 0:
        stats |= {"command": args.cmd, "model": name, "input": args.data if args.cmd == "extract" else args.prompts,
                  "temperature": args.temperature, "top_p": args.top_p}
        data.write_jsonl(args.out, out_rows)  # atomic
        if sft_rows is not None and args.sft_out:
            data.write_jsonl(args.sft_out, sft_rows)
        dist.write_atomic(args.stats or f"{args.out}.stats.json", json.dumps(stats, indent=2) + "\n")
        os.remove(partial)  # last: a crash before this only makes the next run rewrite the same files
        if args.cmd == "reject":
            print_stats(stats)
        else:
            print(f"distill.py {args.cmd}:")
            print_counts(stats)
        print(f"wrote {len(out_rows)} rows to {args.out}"
              + (f" and {len(sft_rows)} SFT rows to {args.sft_out}" if sft_rows is not None and args.sft_out else ""))


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as e:  # bad data (DataError) or no model files: one clear line, no traceback
        raise SystemExit(f"error: {e}") from None
    dist.cleanup()  # under torchrun: the ranks meet, the group goes, the process ends here
