"""A KV-cached, continuously batched sampler: temperature, top-p, EOS/length stops, per-token log-probs.

    from sample import generate
    outs = generate(model, tok, ["What is 2+2?"], n=4, temperature=0.7, top_p=0.95, max_new_tokens=512)
    outs[0][0].text, outs[0][0].token_ids, outs[0][0].logprobs, outs[0][0].finish_reason  # "eos" | "length"

    python sample.py --model tiny --prompts prompts.jsonl --n 4 --temperature 0.7 --top-p 0.95 \
        --max-new-tokens 16384 --kv-slots 0 --out samples.jsonl     # --kv-slots 0: as many as fit in memory
    torchrun --nproc_per_node 8 sample.py --model qwen-math-7b --n-samples 4 ...   # prompts split across ranks

How it works. `slots` cache rows are preallocated (model.KVCache), each for `capacity` = longest prompt +
max_new_tokens tokens. How many: `batch_size` if given, else as many as fit in a memory budget (kv_budget:
free GPU memory minus a margin; a fixed amount on a CPU), at most one per job; the jobs that do not get a slot
wait in a queue, never holding cache memory. Each waiting (prompt, sample) job is prefilled into a free slot;
then every step decodes one token for all slots at once (longcot_kernels.decode_attention reads each row's own cache
length). A row that emits EOS or reaches max_new_tokens frees its slot, which the next waiting job refills
(continuous batching: long-CoT answer lengths differ by 10x within a batch, and a static batch would idle on
its longest row).

The decode step is all on the device (DecodeState.step): the draw (hash RNG `uniform` + longcot_kernels.sample), the
EOS / length test, the per-row step counters and the generated tokens and log-probs (written into device
buffers) are updated there, with no host sync. On a GPU with the Triton backend the whole step is captured
once into a CUDA graph and replayed; on a CPU the same function runs eagerly. The host looks at the device
only every `poll_every` steps (and exactly when a row reaches max_new_tokens, which it can predict): it reads
which rows finished, copies their tokens out and refills their slots. A row that ends with EOS between two
polls stops there on the device (its later steps write nothing), so polling less often changes no result; it
only leaves that slot idle for up to poll_every - 1 steps.
`keep_cache=True` keeps the KV cache and its captured graphs after the call for the next call with the same
(model, slots, capacity, dtype), which then skips the allocation and the capture; `release_cache()` frees it.
It is off by default because an auto-sized cache holds most of the free memory, which training needs.

Log-probs are those of the full tempered distribution, log_softmax(logits / T), which is what PPO's ratio
needs (not of the top-p-truncated one). Under torchrun the sampler decodes from a plain full-weight copy of
the policy (`decode_copy`), so ranks never wait on each other inside the decode loop.
Departures from the paper: none in what is sampled. The paper evaluates at temperature 0.7, top-p 0.95 (this
CLI's defaults); the authors' RL rollouts sample at temperature 1.0, top-p 1.0 (their train_ppo_ray.py defaults,
which no run script overrides), which ppo.py's paper preset passes. Both sample with vLLM; this is our own.
"""
import argparse
import json
import os
import sys
import time
import weakref
from dataclasses import dataclass
from typing import List

import torch

import longcot_kernels
from model import CausalLM, KVCache

GiB = 1 << 30
CPU_KV_BUDGET = 4 * GiB  # KV-cache budget on a CPU (no cheap "free memory" query there; a laptop has >= 8 GiB)
PREFILL_TOKENS = 16384  # padded prompt tokens per prefill forward: its activations (~2 GiB at 7B) come out of the
#   margin below, not out of the KV cache (prefilling 32 slots x 2,048 tokens at once took ~8 GiB: plan.py)
GPU_MARGIN = 0.15  # on a GPU the budget is free memory minus this fraction of the total, kept for the decode
#                    step's activations and logits, the sampling workspaces and allocator fragmentation
CAPACITY_ROUND = 128  # on a GPU, cache capacity is rounded up to a multiple of this, so that calls whose longest
#                       prompt differs a little share one cached cache and graph (keep_cache=True)


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
    jobs are batched or split over ranks. seed: int or 0-d int64 tensor. int64 arithmetic: products wrap,
    and the masks keep 32 bits (the low 32 bits of a wrapped product are those of the exact one)."""
    M32 = 0xFFFFFFFF
    x = (keys * 0x9E3779B1 + (step * 0x85EBCA77 + seed * 0xC2B2AE3D)) & M32
    for mul in (0x7FEB352D, 0x846CA68B):  # a 32-bit integer mixer (xor-shift, multiply)
        x = ((x ^ (x >> 16)) * mul) & M32
    x = x ^ (x >> 16)
    return (x >> 8).float() / float(1 << 24)  # 24 bits: exact in fp32, never 1.0


# ----------------------------------------------------------------------------------------------------
# How many cache slots fit
# ----------------------------------------------------------------------------------------------------
def kv_bytes_per_token(cfg, dtype) -> int:
    """Bytes of K and V for one token in every layer: 2 x layers x kv_heads x head_dim x element size.
    Qwen2.5-Math-7B in bf16: 2 x 28 x 4 x 128 x 2 = 57,344."""
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * torch.empty((), dtype=dtype).element_size()


def kv_bytes_per_slot(cfg, capacity, dtype) -> int:
    """Bytes of one cache row ("slot") of `capacity` tokens (model.KVCache)."""
    return kv_bytes_per_token(cfg, dtype) * capacity


def kv_slots(cfg, capacity, dtype, budget_bytes) -> int:
    """How many slots of `capacity` tokens fit in `budget_bytes`: budget // bytes per slot, at least 1."""
    return max(1, int(budget_bytes) // kv_bytes_per_slot(cfg, capacity, dtype))


def kv_budget(device, margin=GPU_MARGIN) -> int:
    """Bytes the KV cache may take now. CUDA: free memory (what the driver reports free, plus what PyTorch's
    allocator holds unused) minus `margin` x total memory. CPU: CPU_KV_BUDGET."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_KV_BUDGET
    free, total = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(0, free - int(margin * total))


def round_capacity(tokens, device) -> int:
    """Cache capacity for `tokens` tokens: exact on a CPU, rounded up to CAPACITY_ROUND on a GPU."""
    if torch.device(device).type != "cuda":
        return tokens
    return -(-tokens // CAPACITY_ROUND) * CAPACITY_ROUND


def choose_slots(cfg, jobs, capacity, dtype, device, batch_size=None, budget=None) -> int:
    """Slots for `jobs` waiting jobs: min(jobs, batch_size) when batch_size is given (> 0), else
    min(jobs, slots that fit in `budget` bytes (default kv_budget(device))). The rest queue."""
    if batch_size:
        return max(1, min(jobs, int(batch_size)))
    if budget is None:
        budget = kv_budget(device)
    return max(1, min(jobs, kv_slots(cfg, capacity, dtype, budget)))


# ----------------------------------------------------------------------------------------------------
# The decode step, on the device
# ----------------------------------------------------------------------------------------------------
class DecodeState:
    """The KV cache and every per-slot tensor of the decode loop, all on the device, and the step that
    updates them (captured into CUDA graphs when `use_graph`, one per (temperature, top_p)).

    Per slot b: logits[b] (V,) the next-token logits; steps[b] tokens generated so far by its job;
    active[b] still generating; eos[b] its last token is a stop token; key[b] its job's random-stream key;
    tokens[b, j], logprobs[b, j] the j-th generated token and its log-prob (column `capacity` is a trash column
    that idle rows write to)."""

    def __init__(self, model: CausalLM, slots, capacity, dtype, device, use_graph, n_stop=8):
        self.model_ref = weakref.ref(model)
        self.params = None  # param_addresses(model), set when generate keeps this state for a later call
        self.slots, self.capacity, self.dtype, self.device = slots, capacity, dtype, torch.device(device)
        self.use_graph = use_graph
        self.backend = longcot_kernels.backend()
        self.cache = KVCache(model.cfg, slots, capacity, dtype, device)
        z = lambda *shape, dt=torch.long: torch.zeros(*shape, dtype=dt, device=device)  # noqa: E731
        self.logits = z(slots, model.cfg.vocab_size, dt=dtype)  # (B, V)
        self.tokens = z(slots, capacity + 1)  # (B, C + 1)
        self.logprobs = z(slots, capacity + 1, dt=torch.float32)  # (B, C + 1)
        self.steps, self.key = z(slots), z(slots)  # (B,)
        self.active, self.eos = z(slots, dt=torch.bool), z(slots, dt=torch.bool)  # (B,)
        self.trash = torch.full((), capacity, dtype=torch.long, device=device)
        self.seed, self.max_new, self.pad = z(()), z(()), z(())  # 0-d: set per call, read inside the graph
        self.stop = torch.full((n_stop,), -1, dtype=torch.long, device=device)  # stop ids, padded with -1
        self.graphs, self.pool = {}, None
        self.setup_s = 0.0  # seconds spent capturing graphs (bench/bench_sample.py reports it)
        self.flags = torch.zeros(slots, dtype=torch.bool, pin_memory=self.device.type == "cuda")  # host copy

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in (self.cache.k, self.cache.v, self.logits, self.tokens,
                                                          self.logprobs))

    def matches(self, model, slots, capacity, dtype, device, use_graph, n_stop):
        """True when this state can serve a call with these settings (same live model, same weight storage)."""
        return (self.model_ref() is model and n_stop <= self.stop.numel()
                and (slots, capacity, dtype, torch.device(device), use_graph)
                == (self.slots, self.capacity, self.dtype, self.device, self.use_graph)
                and self.backend == longcot_kernels.backend() and self.params == param_addresses(model))

    def reset(self, seed, max_new, pad, stop):
        """Every slot idle; this call's seed, length limit, padding id and stop ids (shapes fixed: no recapture)."""
        self.active.zero_(), self.eos.zero_(), self.steps.zero_(), self.cache.lengths.zero_()
        self.seed.fill_(seed), self.max_new.fill_(max_new), self.pad.fill_(pad)
        self.stop.fill_(-1)
        self.stop[:len(stop)] = torch.tensor(stop, dtype=torch.long)

    def prefill(self, model, rows, pad, max_tokens=None):
        """Start jobs in idle slots. rows: [(slot, prompt token ids, the job's random-stream key)]. The prompts run
        through the model in chunks of at most `max_tokens` padded tokens (at least one row each), right-padded,
        writing their keys and values into the cache rows and each slot's next-token logits."""
        max_tokens = max_tokens or PREFILL_TOKENS
        i = 0
        while i < len(rows):
            n, T = 1, len(rows[i][1])
            while i + n < len(rows) and (n + 1) * max(T, len(rows[i + n][1])) <= max_tokens:
                T = max(T, len(rows[i + n][1]))
                n += 1
            chunk, i = rows[i:i + n], i + n
            ids = torch.full((n, T), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (_, p, _) in enumerate(chunk):  # right padding: prompt tokens at cache positions 0..len-1
                ids[r, :len(p)] = torch.tensor(p)
                mask[r, :len(p)] = 1
            slot_t = torch.tensor([slot for slot, _, _ in chunk], device=self.device)
            out = model(ids.to(self.device), attention_mask=mask.to(self.device), cache=self.cache, slots=slot_t)
            self.logits[slot_t] = out.logits.to(self.dtype)
            del out
            self.key[slot_t] = torch.tensor([key for *_, key in chunk], device=self.device)
            self.steps[slot_t] = 0
            self.eos[slot_t] = False
            self.active[slot_t] = True

    def step(self, model, temperature, top_p):
        """One token for every slot: draw from `logits`, record, stop rows, then the forward for the next token."""
        active = self.active
        u = uniform(self.seed, self.key, self.steps)  # (B,) the draw's randomness, reproducible from the seed
        new, lp = longcot_kernels.sample(self.logits, temperature, top_p, u)  # (B,), (B,)
        col = torch.where(active, self.steps, self.trash)[:, None]  # (B, 1) idle rows write the trash column
        self.tokens.scatter_(1, col, new[:, None])
        self.logprobs.scatter_(1, col, lp[:, None])
        hit = active & (new[:, None] == self.stop[None, :]).any(-1)  # (B,) stopped by a stop token
        self.steps += active
        done = hit | (active & (self.steps >= self.max_new))  # (B,) EOS, or max_new_tokens reached
        self.eos |= hit
        active &= ~done
        self.cache.lengths.mul_(active)  # idle rows sit at position 0 (their garbage is never read)
        inp = torch.where(active, new, self.pad)[:, None]  # (B, 1)
        self.logits.copy_(model(inp, cache=self.cache).logits)  # (B, V) next-token logits
        self.cache.lengths += active

    def run(self, model, temperature, top_p):
        """step(), replayed from its CUDA graph when there is one (captured on first use)."""
        if not self.use_graph:
            return self.step(model, temperature, top_p)
        key = (float(temperature), float(top_p))
        if key not in self.graphs:
            self.graphs[key] = self.capture(model, temperature, top_p)
        self.graphs[key].replay()

    def capture(self, model, temperature, top_p):
        """Warm up (Triton compiles, allocator settles) on a side stream, then capture one step. Must run while
        every slot is idle (the warm-up steps overwrite `logits`): generate captures before its first prefill."""
        assert not bool(self.active.any()), "capture with every slot idle"
        t0 = time.perf_counter()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                self.step(model, temperature, top_p)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):  # graphs of one state share a memory pool (never concurrent)
            self.step(model, temperature, top_p)
        self.pool = graph.pool()
        torch.cuda.synchronize()
        self.setup_s += time.perf_counter() - t0
        return graph

    def poll(self):
        """Host copy of `active` (B bools): one small device->host copy, the loop's only regular sync."""
        self.flags.copy_(self.active, non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream().synchronize()
        return self.flags.tolist()


def param_addresses(model):
    """Storage addresses of the weights: a captured graph reads these, so a model whose tensors were replaced
    (not updated in place) needs a new capture."""
    return tuple(p.data_ptr() for p in model.parameters())


_kept: List[DecodeState] = []  # at most one state kept between calls (keep_cache=True)
last_stats = {}  # what the last generate call did: slots, capacity, kv_bytes, reused, setup_s, steps, polls


def release_cache():
    """Free the KV cache and graphs kept by generate(keep_cache=True)."""
    if _kept:
        dev = _kept[0].device
        _kept.clear()
        if dev.type == "cuda":
            torch.cuda.empty_cache()


@torch.no_grad()
def generate(model: CausalLM, tokenizer, prompts, n=1, temperature=0.7, top_p=0.95, max_new_tokens=1024,
             seed=0, batch_size=None, progress=False, cuda_graph=True, keys=None, poll_every=None,
             kv_budget_bytes=None, keep_cache=False) -> List[List[Sample]]:
    """Sample `n` responses for each prompt (str, or a list of token ids). Returns one list per prompt.
    keys: a global integer id per prompt (default 0..len-1); sample k of prompt i draws its randomness from
    (seed, keys[i] * n + k, step), so it does not depend on batching or on how prompts are split over ranks.
    batch_size: cache slots; None or 0 = as many as fit in kv_budget_bytes (default kv_budget(device)), at most
    one per job. poll_every: decode steps between looks at which rows finished (default 16 with a CUDA graph,
    1 eager); results do not depend on it. keep_cache: keep the cache and graphs for the next call."""
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    stop = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    prompt_ids = [p if isinstance(p, list) else encode_prompt(tokenizer, p) for p in prompts]
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError(f"generate: prompt {[len(p) for p in prompt_ids].index(0)} is empty")
    keys = list(range(len(prompts))) if keys is None else list(keys)
    jobs = [(i, k, ids, keys[i] * n + k) for i, ids in enumerate(prompt_ids) for k in range(n)]  # waiting jobs
    results: List[List[Sample]] = [[None] * n for _ in prompts]  # results[i][k]: sample k of prompt i
    if not jobs:
        return results
    use_graph = bool(cuda_graph and device.type == "cuda" and longcot_kernels.backend() == "triton")
    poll_every = poll_every or (16 if use_graph else 1)
    capacity = round_capacity(max(len(ids) for _, _, ids, _ in jobs) + max_new_tokens, device)
    kept = _kept[0] if _kept and _kept[0].device == device else None
    if kv_budget_bytes is None and not batch_size:
        kv_budget_bytes = kv_budget(device) + (kept.nbytes() if kept else 0)  # a kept cache is reusable memory
    B = choose_slots(model.cfg, len(jobs), capacity, dtype, device, batch_size, kv_budget_bytes)
    n_stop = max(8, len(stop))
    reused = kept is not None and kept.matches(model, B, capacity, dtype, device, use_graph, n_stop)
    if not reused:
        release_cache()
    state = kept if reused else DecodeState(model, B, capacity, dtype, device, use_graph, n_stop)
    last_stats.clear()
    last_stats.update(slots=B, capacity=capacity, kv_bytes=2 * state.cache.k.numel() * state.cache.k.element_size(),
                      reused=reused, steps=0, polls=0)
    if progress:
        print(f"KV cache: {B} slots x {capacity} tokens = {last_stats['kv_bytes'] / GiB:.2f} GiB "
              f"({len(jobs)} jobs{', the rest queue' if B < len(jobs) else ''})", flush=True)
    was_training = model.training
    model.eval()
    state.reset(seed, max_new_tokens, pad, stop)
    setup0 = state.setup_s
    if use_graph and (float(temperature), float(top_p)) not in state.graphs:  # capture while every slot is idle
        state.graphs[float(temperature), float(top_p)] = state.capture(model, temperature, top_p)
        state.reset(seed, max_new_tokens, pad, stop)  # the warm-up steps ran on the idle rows
    owner = [None] * B  # slot -> (prompt index, sample index) of the job it serves
    ran = [0] * B  # slot -> decode steps since its job started (>= the job's tokens; equal until it stops)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), unit="sample", desc="sampling", dynamic_ncols=True)
    n_tokens, t0 = 0, time.time()
    while True:
        free = [s for s in range(B) if owner[s] is None]
        if free and jobs:  # continuous batching: refill free slots with waiting prompts
            take, jobs = jobs[:len(free)], jobs[len(free):]
            for slot, (pi, k, _, _) in zip(free, take):
                owner[slot], ran[slot] = (pi, k), 0
            state.prefill(model, [(slot, p, key) for slot, (_, _, p, key) in zip(free, take)], pad)
        busy = [s for s in range(B) if owner[s] is not None]
        if not busy:
            break
        # decode until the next poll: every `poll_every` steps, or exactly when a row reaches max_new_tokens
        k = min(poll_every, min(max_new_tokens - ran[s] for s in busy))
        for _ in range(k):
            state.run(model, temperature, top_p)
        for s in busy:
            ran[s] += k
        last_stats["steps"] += k
        last_stats["polls"] += 1
        active = state.poll()
        done = [s for s in busy if not active[s]]
        if not done:
            continue
        idx = torch.tensor(done, device=device)
        lengths = state.steps[idx].tolist()
        eos = state.eos[idx].tolist()
        width = max(lengths)
        toks = state.tokens[idx, :width].tolist()
        lps = state.logprobs[idx, :width].tolist()
        for s, L, e, t, lp in zip(done, lengths, eos, toks, lps):
            pi, k = owner[s]
            text = tokenizer.decode(t[:L], skip_special_tokens=True)
            results[pi][k] = Sample(pi, t[:L], lp[:L], text, "eos" if e else "length")
            owner[s] = None
            n_tokens += L
        if bar:
            bar.update(len(done))
            bar.set_postfix(tok_s=f"{n_tokens / max(time.time() - t0, 1e-9):.0f}", refresh=False)
    if bar:
        bar.close()
    last_stats["setup_s"] = state.setup_s - setup0
    model.train(was_training)
    if keep_cache:
        state.params = param_addresses(model)
        _kept[:] = [state]
    return results


def decode_copy(model: CausalLM, copy: CausalLM = None, dtype=torch.bfloat16):
    """A plain (unsharded) `dtype` copy of `model`'s weights for sampling; pass the previous copy to refresh it
    in place. Under FSDP every rank must call it (each parameter is gathered with one collective).

    Memory: the copy is built in `dtype` from the start (never an fp32 model first), and the weights are copied
    one parameter at a time, each cast to `dtype` before it is gathered: the transient cost is one parameter, not
    a full state dict (~30 GB in fp32 at 7B). Strict: every weight of the copy must come from `model`."""
    src = {k: v for k, v in model.named_parameters() if not k.startswith("value_head.")}
    if copy is None:
        w = next(iter(src.values()))
        device = w.to_local().device if hasattr(w, "to_local") else w.device
        with torch.device("meta"):
            copy = CausalLM(model.cfg).to(dtype)  # on meta: no memory yet
        copy.to_empty(device=device)  # (CausalLM.to_empty keeps lm_head tied to the embeddings)
    dst = dict(copy.named_parameters())
    if set(dst) != set(src):
        raise ValueError(f"decode_copy: parameter names differ: missing {sorted(set(dst) - set(src))[:3]}, "
                         f"unexpected {sorted(set(src) - set(dst))[:3]}")
    with torch.no_grad():
        for name, p in dst.items():  # same order on every rank: the gathers pair up
            w = src[name].detach().to(dtype)
            p.copy_(w.full_tensor() if hasattr(w, "full_tensor") else w)  # DTensor shard -> full, one at a time
    return copy.eval()


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def read_prompts(path):
    """JSONL rows with "prompt" (used as is) or "problem" (formatted by data.format_prompt later). A bad line
    (not UTF-8, not JSON, no prompt) is a ValueError naming file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: prompt file not found")
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                                 f"{e.start + 1})") from None
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
    ap.add_argument("--kv-slots", "--batch-size", dest="kv_slots", type=int, default=0,
                    help="cache slots decoded together; 0: as many as fit in free memory (see kv_budget)")
    ap.add_argument("--seed", type=int, default=0, help="the draws are reproducible from it")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    ap.add_argument("--out", default="samples.jsonl", help="one JSON line per sample")
    args = ap.parse_args(argv)

    import dist
    import model as M
    # every flag checked before the model loads: `error: --flag: got X, expected Y`, exit status 2
    dist.require(args.n >= 1, "--n", args.n, "an integer >= 1 (samples per prompt)")
    dist.require(args.temperature >= 0, "--temperature", args.temperature, ">= 0 (0: greedy)")
    dist.require(0 < args.top_p <= 1, "--top-p", args.top_p, "a number in (0, 1]")
    dist.require(args.max_new_tokens >= 1, "--max-new-tokens", args.max_new_tokens, "an integer >= 1")
    dist.require(args.kv_slots >= 0, "--kv-slots", args.kv_slots, "an integer >= 0 (0: as many as fit)")
    dist.require(args.dtype in ("auto", "bf16", "fp32"), "--dtype", args.dtype, "auto, bf16 or fp32")
    try:
        rows = read_prompts(args.prompts)
    except (OSError, ValueError) as e:
        dist.arg_error("--prompts", str(e))
    dist.check_writable("--out", args.out, folder=False)
    rank, world, device = dist.init()
    dtype = dist.compute_dtype(args.dtype, device)
    net, tok = M.load(args.model, dtype=dtype, device=device)
    if any("prompt" not in r for r in rows):
        from data import format_prompt
    texts = [r["prompt"] if "prompt" in r else format_prompt(r["problem"], tok, r.get("options")) for r in rows]
    mine = list(range(rank, len(texts), world))  # questions split across ranks
    outs = generate(net, tok, [texts[i] for i in mine], n=args.n, temperature=args.temperature,
                    top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed + rank,
                    batch_size=args.kv_slots, progress=rank == 0)
    path = args.out if world == 1 else f"{args.out}.rank{rank}"
    with dist.atomic_open(path) as f:  # PATH.tmp, renamed to PATH when complete
        for i, samples in zip(mine, outs):
            for s in samples:
                f.write(json.dumps({"prompt_index": i, "prompt": texts[i], "response": s.text,
                                    "num_tokens": len(s.token_ids), "finish_reason": s.finish_reason,
                                    "mean_logprob": sum(s.logprobs) / max(len(s.logprobs), 1)}) + "\n")
    dist.print0(f"wrote {sum(map(len, outs))} samples to {path if world == 1 else args.out + '.rank*'}")


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    import dist
    dist.cleanup()  # under torchrun: the ranks meet, the group goes, the process ends here
