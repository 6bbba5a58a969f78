"""A KV-cached, continuously batched sampler: temperature, top-p, EOS/length stops, per-token log-probs.

    from sample import generate
    outs = generate(model, tok, ["What is 2+2?"], n=4, temperature=0.7, top_p=0.95, max_new_tokens=512)
    outs[0][0].text, outs[0][0].token_ids, outs[0][0].logprobs, outs[0][0].finish_reason  # "eos" | "length"

    python sample.py --model tiny --prompts prompts.jsonl --n 4 --temperature 0.7 --top-p 0.95 \
        --max-new-tokens 16384 --out samples.jsonl
    torchrun --nproc_per_node 8 sample.py --model qwen-math-7b --n-samples 4 ...   # prompts split across ranks

How it works. `batch_size` cache rows ("slots") are preallocated (model.KVCache). Each waiting (prompt,
sample) job is prefilled into a free slot; then every step decodes one token for all slots at once
(kernels.decode_attention reads each row's own cache length). A row that emits EOS or reaches
max_new_tokens frees its slot, which the next waiting job refills at once (continuous batching: long-CoT
answer lengths differ by 10x within a batch, and a static batch would idle on its longest row).
On a GPU the decode step runs the Triton kernels and is replayed from a CUDA graph (no per-kernel launch
cost); on a CPU the same code runs the torch references eagerly.

Log-probs are those of the full tempered distribution, log_softmax(logits / T), which is what PPO's ratio
needs (not of the top-p-truncated one). Under torchrun the sampler decodes from a plain full-weight copy of
the policy (`decode_copy`), so ranks never wait on each other inside the decode loop.
Departures from the paper: none in what is sampled (the paper samples with vLLM, temperature 0.7, top-p 0.95).
"""
import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import List

import torch

import kernels
from model import CausalLM, KVCache


@dataclass
class Sample:
    prompt_index: int
    token_ids: List[int]  # generated tokens, the EOS token included when finish_reason == "eos"
    logprobs: List[float]  # log p(token) under the tempered full distribution, one per token
    text: str  # decoded response, special tokens removed
    finish_reason: str  # "eos" | "length"


def stop_ids(model, tokenizer):
    """Token ids that end a response: the model's and tokenizer's EOS, plus chat end-of-turn tokens."""
    ids = {model.cfg.eos_token_id, getattr(tokenizer, "eos_token_id", None)}
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>") if t in vocab}
    return sorted(i for i in ids if i is not None)


def encode_prompt(tokenizer, text):
    """Token ids of a prompt; no second BOS when a chat template already wrote one."""
    bos = getattr(tokenizer, "bos_token", None)
    special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def uniform(seed, keys, step):
    """(B,) uniforms in [0, 1) from an integer hash of (seed, job key, step): each sample's randomness
    depends only on which job it is, not on its slot, batch or rank, so results are the same however the
    jobs are batched or split over ranks. int64 arithmetic: products wrap, and the masks keep 32 bits."""
    M32 = 0xFFFFFFFF
    x = (keys * 0x9E3779B1 + (step * 0x85EBCA77 + seed * 0xC2B2AE3D)) & M32
    for mul in (0x7FEB352D, 0x846CA68B):  # a 32-bit integer mixer (xor-shift, multiply)
        x = ((x ^ (x >> 16)) * mul) & M32
    x = x ^ (x >> 16)
    return (x >> 8).float() / float(1 << 24)  # 24 bits: exact in fp32, never 1.0


class DecodeStep:
    """model(tokens, cache) for all slots; on CUDA captured once into a graph and replayed."""

    def __init__(self, model, cache, use_graph):
        self.model, self.cache, self.graph = model, cache, None
        self.tokens = torch.zeros(cache.lengths.shape[0], 1, dtype=torch.long, device=cache.k.device)
        if use_graph:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm up (Triton compiles, allocator settles) outside the capture
                for _ in range(2):
                    self._run()
            torch.cuda.current_stream().wait_stream(s)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = self._run()

    def _run(self):
        return self.model(self.tokens, cache=self.cache).logits

    def __call__(self, tokens):  # (B,) -> logits (B, V); the output buffer is reused between calls
        self.tokens.copy_(tokens[:, None])
        if self.graph is None:
            return self._run()
        self.graph.replay()
        return self.logits


@torch.no_grad()
def generate(model: CausalLM, tokenizer, prompts, n=1, temperature=0.7, top_p=0.95, max_new_tokens=1024,
             seed=0, batch_size=64, progress=False, cuda_graph=True, keys=None) -> List[List[Sample]]:
    """Sample `n` responses for each prompt (str, or a list of token ids). Returns one list per prompt.
    keys: a global integer id per prompt (default 0..len-1); sample k of prompt i draws its randomness from
    (seed, keys[i] * n + k, step), so it does not depend on batching or on how prompts are split over ranks."""
    device = next(model.parameters()).device
    eos = torch.tensor(stop_ids(model, tokenizer), device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(eos[0])
    prompt_ids = [p if isinstance(p, list) else encode_prompt(tokenizer, p) for p in prompts]
    keys = list(range(len(prompts))) if keys is None else list(keys)
    jobs = [(i, ids, keys[i] * n + k) for i, ids in enumerate(prompt_ids) for k in range(n)]  # waiting jobs
    results: List[List[Sample]] = [[] for _ in prompts]
    if not jobs:
        return results
    B = min(batch_size, len(jobs))
    capacity = max(len(ids) for _, ids, _ in jobs) + max_new_tokens
    cache = KVCache(model.cfg, B, capacity, next(model.parameters()).dtype, device)
    step = DecodeStep(model, cache, cuda_graph and device.type == "cuda" and kernels.backend() == "triton")
    owner = [None] * B  # slot -> index of the prompt it serves
    job_key = torch.zeros(B, dtype=torch.long, device=device)  # slot -> its job's random-stream key
    toks, lps = [[] for _ in range(B)], [[] for _ in range(B)]
    active = torch.zeros(B, dtype=torch.bool, device=device)
    logits = torch.zeros(B, model.cfg.vocab_size, device=device)
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), unit="sample", desc="sampling", dynamic_ncols=True)
    n_tokens, t0 = 0, time.time()
    while jobs or active.any():
        free = [s for s in range(B) if owner[s] is None]
        if free and jobs:  # continuous batching: refill free slots with waiting prompts (one prefill)
            take, jobs = jobs[:len(free)], jobs[len(free):]
            slots = free[:len(take)]
            T = max(len(ids) for _, ids, _ in take)
            ids = torch.full((len(take), T), pad, dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            for r, (pi, p, key) in enumerate(take):  # right padding: prompt tokens at cache positions 0..len-1
                ids[r, :len(p)] = torch.tensor(p, device=device)
                mask[r, :len(p)] = 1
                owner[slots[r]], toks[slots[r]], lps[slots[r]] = pi, [], []
                job_key[slots[r]] = key
            slot_t = torch.tensor(slots, device=device)
            logits[slot_t] = model(ids, attention_mask=mask, cache=cache, slots=slot_t).logits.float()
            active[slot_t] = True
        steps = torch.tensor([len(t) for t in toks], device=device)
        u = uniform(seed, job_key, steps)  # (B,) the draw's randomness, reproducible from `seed`
        new, new_lp = kernels.sample(logits, temperature, top_p, u)  # (B,), (B,)
        finished = active & torch.isin(new, eos)
        for s, (t, lp) in enumerate(zip(new.tolist(), new_lp.tolist())):  # one host sync per step
            if owner[s] is None:
                continue
            toks[s].append(t)
            lps[s].append(lp)
        n_tokens += int(active.sum())
        done = finished | (active & (steps + 1 >= max_new_tokens))  # steps: tokens before this one
        for s in done.nonzero().flatten().tolist():
            reason = "eos" if bool(finished[s]) else "length"
            text = tokenizer.decode(toks[s], skip_special_tokens=True)
            results[owner[s]].append(Sample(owner[s], toks[s], lps[s], text, reason))
            owner[s] = None
            if bar:
                bar.update(1)
        active &= ~done
        cache.lengths[~active] = 0  # idle slots stay at position 0 (their garbage is never read)
        if not active.any():
            continue
        logits = step(torch.where(active, new, pad)).float()  # (B, V): next-token logits for every slot
        cache.lengths += active.long()
        if bar:
            bar.set_postfix(tok_s=f"{n_tokens / max(time.time() - t0, 1e-9):.0f}", refresh=False)
    if bar:
        bar.close()
    model.train(was_training)
    return results


def decode_copy(model: CausalLM, state_dict, copy: CausalLM = None, dtype=torch.bfloat16):
    """A plain (unsharded) copy of `model` for sampling under FSDP; pass the previous copy to refresh it in
    place. state_dict: dist.full_state_dict(policy, rank0_only=False), gathered after each update."""
    if copy is None:
        device = next(iter(state_dict.values())).device
        with torch.device("meta"):
            copy = CausalLM(model.cfg)
        copy.to_empty(device=device)
        if model.cfg.tie_word_embeddings:
            copy.lm_head.weight = copy.model.embed_tokens.weight
        copy.to(dtype)
    sd = {k: v for k, v in state_dict.items() if not k.startswith("value_head.")}
    copy.load_state_dict(sd, strict=False)
    return copy.eval()


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def read_prompts(path):
    """JSONL rows with "prompt" (used as is) or "problem" (formatted by data.format_prompt later)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: prompt file not found")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt", row.get("problem")), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string \"prompt\" or \"problem\"")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="alias, HF directory or hub id (model.load)")
    ap.add_argument("--prompts", required=True, help="JSONL with a 'prompt' or 'problem' per line")
    ap.add_argument("--n", "--n-samples", dest="n", type=int, default=4,
                    help="samples per prompt (under torchrun spell it --n-samples: torchrun's parser takes --n)")
    ap.add_argument("--temperature", type=float, default=0.7, help="paper's evaluation temperature")
    ap.add_argument("--top-p", type=float, default=0.95, help="paper's nucleus size")
    ap.add_argument("--max-new-tokens", type=int, default=16384, help="paper's evaluation budget")
    ap.add_argument("--batch-size", type=int, default=64, help="cache slots decoded together")
    ap.add_argument("--seed", type=int, default=0, help="the draws are reproducible from it")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--out", default="samples.jsonl", help="one JSON line per sample")
    args = ap.parse_args(argv)

    import dist
    import model as M
    rank, world, device = dist.init()
    dtype = dist.compute_dtype(args.dtype, device)
    rows = read_prompts(args.prompts)
    net, tok = M.load(args.model, dtype=dtype, device=device)
    if any("prompt" not in r for r in rows):
        from data import format_prompt
    texts = [r["prompt"] if "prompt" in r else format_prompt(r["problem"], tok, r.get("options")) for r in rows]
    mine = list(range(rank, len(texts), world))  # questions split across ranks
    outs = generate(net, tok, [texts[i] for i in mine], n=args.n, temperature=args.temperature,
                    top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed + rank,
                    batch_size=args.batch_size, progress=rank == 0)
    path = args.out if world == 1 else f"{args.out}.rank{rank}"
    with open(path, "w") as f:
        for i, samples in zip(mine, outs):
            for s in samples:
                f.write(json.dumps({"prompt_index": i, "prompt": texts[i], "response": s.text,
                                    "num_tokens": len(s.token_ids), "finish_reason": s.finish_reason,
                                    "mean_logprob": sum(s.logprobs) / max(len(s.logprobs), 1)}) + "\n")
    dist.print0(f"wrote {sum(map(len, outs))} samples to {path if world == 1 else args.out + '.rank*'}")
    dist.cleanup()


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
