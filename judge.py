"""The model-based verifier (the paper's Sec. 5.2): an LLM judge reads the end of a response and the reference
answer and says whether the response's final answer is right.

    python ppo.py --verifier judge --judge-model qwen-math-7b-instruct ...       # every rollout graded by the judge
    torchrun --standalone --nproc_per_node 8 ppo.py --preset 5.2 --judge-model qwen-math-7b-instruct ...

    import judge
    ok = judge.grade(judge_model, judge_tok, responses, references, keys=ids)      # list[bool]

What it does, as the authors' openrlhf/reward/judge.py (eddycmu/demystify-long-cot @ 29fddcc) does:
  * the judge sees the last 20 lines of the response (judge.py:7, :50, split on "\\n") and the reference answer
    (:54; their Sec. 5.2 scripts pass the short-form `extracted_answer`, S52:93), in a user turn of the judge's
    chat template with the generation prompt added (:51-65);
  * it is asked to reason step by step and to end with `Judgement: correct|wrong|not_found` (:8-19);
  * it decodes greedily (temperature 0), up to 1,024 new tokens (:39-46);
  * only "correct" earns the correct reward; "wrong", "not_found" and output with no verdict count as wrong
    (:91-95: int(extracted == "correct")).
The judge runs on each rank, on that rank's share of the rollout, batched through sample.generate (KV cache,
continuous batching). It is a full copy per rank (bf16 on a GPU: 15.2 GB at 7B; plan.py counts it).

Departures from the authors' code:
  * The prompt's wording is ours (same content: the task, the 20 lines after "...", the reference, the format).
  * The verdict is the LAST `Judgement:` in the output, case-insensitive, `**bold**` or `code` marks allowed around
    the word; theirs takes the first line that holds one and compares case-sensitively after an IGNORECASE match,
    so "Judgement: Correct" counts as wrong there (judge.py:92-95).
  * Their judge runs in vLLM engines shared round robin by the training ranks (judge.py:29-37); here each rank
    decodes with its own copy.
"""
import re

from sample import generate

TAIL_LINES = 20  # judge.py:7 TRUNCATED_LINES
MAX_NEW_TOKENS = 1024  # judge.py:43 max_tokens
VERDICTS = ("correct", "wrong", "not_found")
TEMPLATE = (  # our wording of judge.py:8-19
    "Below are the final {n} lines of a model's solution to a math problem, and the reference answer to that "
    "problem. Judge whether the solution is correct by comparing its final answer with the reference answer; "
    "ignore everything else in the solution.\n\n"
    "Final {n} lines of the solution:\n...\n{tail}\n\n"
    "Reference answer:\n{reference}\n\n"
    "Think it through step by step, then finish with one line `Judgement: correct`, `Judgement: wrong`, or "
    "`Judgement: not_found` (the lines hold no final answer).")
_VERDICT = re.compile(r"judgement\s*:\s*[*`]*\s*(correct|wrong|not_found)\b", re.IGNORECASE)


def tail(text: str, n: int = TAIL_LINES) -> str:
    """The last n lines of text (split on "\\n", as judge.py:50); all of it when it has fewer."""
    return "\n".join(text.split("\n")[-n:])


def judge_prompt(response: str, reference: str, tokenizer=None) -> str:
    """The judge's input: TEMPLATE around the response's tail and the reference, in a user turn of the judge's chat
    template (with the assistant's generation prompt) when its tokenizer has one, else as plain text."""
    body = TEMPLATE.format(n=TAIL_LINES, tail=tail(response), reference=reference)
    if getattr(tokenizer, "chat_template", None) is not None:
        return tokenizer.apply_chat_template([{"role": "user", "content": body}], tokenize=False,
                                             add_generation_prompt=True)
    return body + "\n"


def parse_judgement(text: str):
    """'correct', 'wrong' or 'not_found' from the last `Judgement: ...` in the judge's output; None when it holds
    none (e.g. it ran out of tokens or wrote something else)."""
    found = _VERDICT.findall(text)
    return found[-1].lower() if found else None


def grade(model, tokenizer, responses, references, keys=None, max_new_tokens=MAX_NEW_TOKENS, batch_size=None):
    """One bool per response: the judge's verdict is "correct". Greedy, so `keys` (global ids, as sample.generate
    takes them) change nothing but are passed for symmetry with the rollout; batch_size: KV-cache slots (None: as
    many as fit)."""
    if len(responses) != len(references):
        raise ValueError(f"judge.grade: {len(responses)} responses but {len(references)} references")
    if not responses:
        return []
    prompts = [judge_prompt(r, str(ref), tokenizer) for r, ref in zip(responses, references)]
    outs = generate(model, tokenizer, prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens,
                    keys=keys, batch_size=batch_size)
    return [parse_judgement(group[0].text) == "correct" for group in outs]
