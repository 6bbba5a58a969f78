"""Evaluation: sample answers, verify them, report accuracy, response length and reflection words.

    from eval import evaluate
    metrics, records = evaluate(model, tok, rows, n=1)   # rows: dicts with problem, answer, kind (data.py)

`evaluate` is what sft.py and ppo.py call for their periodic held-out evaluation. Under torchrun each rank
samples its share of the questions (from a plain decode copy of the model, see sample.decode_copy) and the
counts are summed over ranks. Paper settings: temperature 0.7, top-p 0.95, up to 16,384 new tokens.
"""
import math
import re

import torch

import dist
from sample import generate

REFLECTION_WORDS = ["wait", "recheck", "retry", "alternatively", "however", "rethink", "try again"]


def reflection_counts(text: str) -> dict:
    """Occurrences of each reflection word (case-insensitive, whole words), as the paper counts them."""
    low = text.lower()
    return {w: len(re.findall(r"\b" + w.replace(" ", r"\s+") + r"\b", low)) for w in REFLECTION_WORDS}


@torch.no_grad()
def evaluate(model, tokenizer, rows, n=1, temperature=0.7, top_p=0.95, max_new_tokens=16384, seed=0,
             batch_size=64, progress=False):
    """Returns (metrics, records). metrics: accuracy (over all samples) with its standard error, mean response
    length in tokens, truncation rate, reflection words per response, n (questions x samples, all ranks).
    records: this rank's per-sample dicts."""
    import verify
    from data import format_prompt
    positions = list(range(dist.rank(), len(rows), dist.world()))  # this rank's questions
    mine = [rows[i] for i in positions]
    prompts = [format_prompt(r["problem"], tokenizer, r.get("options")) for r in mine]
    outs = generate(model, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=progress,
                    keys=positions)  # same samples however the questions are split over ranks
    texts = [s.text for samples in outs for s in samples]
    golds = [r["answer"] for r, samples in zip(mine, outs) for _ in samples]
    kinds = [r.get("kind", "math") for r, samples in zip(mine, outs) for _ in samples]
    grades = verify.grade_batch(texts, golds, kinds) if texts else []
    records = []
    for (r, samples) in zip(mine, outs):
        for s in samples:
            g = grades[len(records)]
            records.append({"id": r.get("id"), "answer": r["answer"], "response": s.text,
                            "extracted": g.extracted, "correct": bool(g.correct), "num_tokens": len(s.token_ids),
                            "finish_reason": s.finish_reason, "reflections": sum(reflection_counts(s.text).values())})
    local = torch.tensor([len(records), sum(r["correct"] for r in records), sum(r["num_tokens"] for r in records),
                          sum(r["finish_reason"] == "length" for r in records),
                          sum(r["reflections"] for r in records)], dtype=torch.float64)
    count, correct, length, trunc, refl = dist.sum_tensor(local).tolist()
    count = max(count, 1)
    acc = correct / count
    metrics = {"accuracy": acc, "accuracy_se": math.sqrt(acc * (1 - acc) / count), "mean_length": length / count,
               "truncation_rate": trunc / count, "reflections_per_response": refl / count, "n": int(count)}
    return metrics, records
