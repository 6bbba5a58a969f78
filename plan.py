"""The memory plan: proves, on a CPU and in a few minutes, that one PPO iteration fits in each GPU's memory.

    python ppo.py --model qwen-math-7b --plan --gpus 8 --gpu-memory 80          # the paper's recipe, 8 x 80 GB
    python ppo.py --model llama-3.1-8b --plan --gpus 8 --gpu-memory 80 --plan-out plan.json
    torchrun --nproc_per_node 8 ppo.py --model qwen-math-1.5b --plan --measure ...    # GPU: plan next to measured

What it runs. Not a formula: the project's own code, on tensors that have a shape, a dtype and a device but no
data (torch's FakeTensorMode), in a world of `--gpus` ranks simulated in this one process by torch's fake process
group (collectives return at once; torchtitan estimates memory the same way). Models are built from the alias's
config (model.config_for: no download), on the meta device, sharded by dist.shard (FSDP2, as ppo.py does), then
given storage. A TorchDispatchMode (`Tracker`) sees every tensor every op creates, counts the bytes of each
storage while it is alive (weak references free them, FSDP2's storage resizes are followed) and keeps the peak.
It plays rank 0 (the largest shards, and the rank that gathers checkpoints). The phases of one iteration, in
ppo.py's order, each running the real functions:

  load + shard     policy fp32 + critic fp32 (value head) + reference bf16, sharded (dist.shard), AdamW made;
                   with --verifier judge also the judge, bf16 and whole on every rank (ppo.py loads it so);
                   with --advantage reinforce no critic (nor its gradients and Adam moments below)
  decode copy      sample.decode_copy(policy, copy): the bf16 full-weight copy the sampler decodes from
  KV cache         sample.DecodeState with the slots sample.choose_slots picks from the budget kv_budget would
                   report, every slot prefilled with a full-length prompt at once, cache lengths at full context,
                   one DecodeState.step (sampling + decode forward)
  judge            (--verifier judge) the same for the judge after the decode copy is freed: prompts of the whole
                   response + JUDGE_EXTRA tokens (20 lines can be all of it), room for --judge-max-new-tokens
  score            ppo.forward_response of policy, reference and critic on one micro-batch at full width, no grad
  train            two micro-batches of policy + critic forward, ppo.policy_loss + ppo.value_loss, backward
                   (the second one holds the gradients of the first: gradient accumulation)
  optimizer        clip_grad_norm_ of both models, AdamW steps (the Adam moments appear), zero_grad
  checkpoint       dist.full_state_dict of policy and critic (rank 0 gathers each tensor, copies it to the host)

The iteration runs twice and each phase reports its larger peak: the second pass is the steady state (Adam
moments held, decode copy refreshed in place). A phase's peak includes everything alive then (weights, optimizer
states, the decode copy, gradients), as on the GPU.

Why a file of its own: ppo.py trains and this file only plans; it runs ppo.py's functions and the sampler's
without changing them, and keeping its machinery (fake tensors, fake world, tracking) out of ppo.py keeps the
training loop readable.

What the plan cannot see, and how its budget allows for it. Fake tensors live on the CPU (FakeTensorMode cannot
make CUDA tensors on a machine without CUDA, and FSDP2 needs a real device type): their bytes are reported as GPU
bytes, and a `.to("cpu")` during the checkpoint phase counts as leaving the GPU. Not tracked: the CUDA context,
NCCL buffers, allocator rounding and fragmentation, and the scratch memory inside fused kernels. So
--gpu-memory is read in GB (10^9 bytes, as vendors count) while usable memory is reported by CUDA in GiB: an
"80 GB" H100 has 79.6 GiB, the plan's budget is 74.5 GiB, the difference (~5 GiB) is left for those.
On the CPU the kernels run their torch references (e.g. decode attention upcasts a layer's cache to fp32, more
than the Triton kernel needs): the plan errs on the large side there. SDPA takes its fused (flash) path as on
the GPU: the causal, maskless layout of model.py needs no (T, T) tensor. Load reads no checkpoint: the shards
are materialised directly (dist.load_sharded's transient, one tensor at a time, is not included).
With --gpus 1 nothing is sharded and, as ppo.py's autocast does on a GPU, forwards run under bf16 autocast.

--measure (GPU only, untested on a CPU): runs the same phases on real CUDA tensors (random weights, the world of
torchrun) and prints torch.cuda.max_memory_allocated per phase next to the plan of the same world.
Departures from the paper: none (the paper does not plan memory).
"""
import contextlib
import functools
import json
import os
import sys
import time
import weakref

import torch
import torch.distributed as td
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten

import dist
import longcot_kernels
import model as M

GiB = 1 << 30
GB = 10 ** 9
PHASES = ["load + shard", "decode copy", "KV cache", "judge", "score", "train", "optimizer", "checkpoint"]
JUDGE_EXTRA = 512  # tokens of the judge's prompt besides the response's last lines: template, reference, chat marks


# ----------------------------------------------------------------------------------------------------
# Tracking live bytes
# ----------------------------------------------------------------------------------------------------
class Tracker(TorchDispatchMode):
    """Counts the bytes of every live tensor storage created while it is active (meta tensors excluded), and the
    peak. Storages are followed with weak references (freed storages are uncounted when they die, which autograd's
    saved tensors delay as they should) and through UntypedStorage.resize_ (FSDP2 frees and re-allocates its
    gathered weights that way). Wrapper subclasses (DTensor) count as their local tensors."""

    def __init__(self, record=False):
        super().__init__()
        self.record = {} if record else None  # id(storage) -> (op, shape, dtype) of its creation, for debugging
        self.op = None
        self.live = {}  # id(storage) -> bytes counted
        self.refs = {}  # id(storage) -> weakref (kept so the callback fires)
        self.host = set()  # ids of storages moved to the host (not counted)
        self.now = self.peak = 0

    def _storages(self, t):
        if is_traceable_wrapper_subclass(t):
            for name in t.__tensor_flatten__()[0]:
                inner = getattr(t, name)
                if isinstance(inner, torch.Tensor):
                    yield from self._storages(inner)
        elif t.device.type != "meta":
            yield t.untyped_storage()

    def count(self, t):
        for st in self._storages(t):
            k = id(st)
            if k in self.live or k in self.host:
                continue
            self.live[k] = st.nbytes()
            self.now += self.live[k]
            if self.record is not None:
                self.record[k] = (str(self.op), tuple(t.shape), t.dtype)
            self.refs[k] = weakref.ref(st, functools.partial(self._died, k))
        self.peak = max(self.peak, self.now)

    def _died(self, k, _ref):
        self.now -= self.live.pop(k, 0)
        if self.record is not None:
            self.record.pop(k, None)
        self.refs.pop(k, None)
        self.host.discard(k)

    def resized(self, st, nbytes):
        k = id(st)
        if k in self.host:
            return
        if k not in self.live:
            self.live[k] = 0
            self.refs[k] = weakref.ref(st, functools.partial(self._died, k))
        self.now += nbytes - self.live[k]
        self.live[k] = nbytes
        self.peak = max(self.peak, self.now)

    def to_host(self, t):
        """`t` was copied to the host: its storage no longer counts (the fake world has one device)."""
        for st in self._storages(t):
            k = id(st)
            self.now -= self.live.pop(k, 0)
            self.host.add(k)
            self.refs.setdefault(k, weakref.ref(st, functools.partial(self._died, k)))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:  # .item() of a fake tensor has no value: answer
            t = args[0]  # False for a bool (model.py's "left padding?" check), else 1 (AdamW's step count)
            return False if t.dtype == torch.bool else (1.0 if t.is_floating_point() else 1)
        self.op = func
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.count(t)
        return out

    def __enter__(self):
        tracker = self
        self._resize = orig = torch.UntypedStorage.resize_

        def resize_(st, nbytes):
            out = orig(st, nbytes)
            tracker.resized(st, int(nbytes))
            return out
        torch.UntypedStorage.resize_ = resize_
        return super().__enter__()

    def __exit__(self, *exc):
        torch.UntypedStorage.resize_ = self._resize
        return super().__exit__(*exc)


class HostCopies(TorchFunctionMode):
    """While active, `t.to("cpu")` / `t.cpu()` of a plain tensor (the gathered full weight that
    dist.full_state_dict moves to the host; not a parameter, not a DTensor shard, which stay on the device)
    counts as a device-to-host copy: its storage no longer counts (in the fake world it is the same tensor)."""

    def __init__(self, tracker):
        super().__init__()
        self.tracker = tracker

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        src = args[0] if args else None
        if name in ("to", "cpu") and isinstance(out, torch.Tensor) and type(src) is not torch.nn.Parameter and \
                not is_traceable_wrapper_subclass(src) and (
                name == "cpu" or any(torch.device(a).type == "cpu" for a in list(args[1:]) + [kwargs.get("device")]
                                     if isinstance(a, (str, torch.device)))):
            self.tracker.to_host(out)
        return out


class FakeProbe:
    """Phase peaks from the Tracker (the plan)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def largest(self, n=12):
        """The n largest live storages: (GiB, op that made it, shape, dtype); needs Tracker(record=True)."""
        t = self.tracker
        rows = sorted(((b / GiB,) + t.record.get(k, ("?", (), None)) for k, b in t.live.items()), reverse=True)
        return rows[:n]

    def start(self):
        self.tracker.peak = self.tracker.now

    def peak(self):
        return self.tracker.peak

    def now(self):
        return self.tracker.now

    def host_copies(self):
        return HostCopies(self.tracker)


class CudaProbe:
    """Phase peaks from the CUDA caching allocator (--measure)."""

    def start(self):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def peak(self):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    def now(self):
        return torch.cuda.memory_allocated()

    def host_copies(self):
        return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------------
# One PPO iteration, phase by phase, with ppo.py's and sample.py's functions
# ----------------------------------------------------------------------------------------------------
def build_sharded(cfg, s):
    """Policy (fp32), critic (fp32, value head; None with --advantage reinforce), reference (bf16) on the meta
    device, sharded by dist.shard as ppo.py shards them (bf16 compute). Run outside the fake mode: dist.shard makes
    a device mesh."""
    models = []
    for value_head, dtype, frozen in ((False, torch.float32, False), (True, torch.float32, False),
                                      (False, torch.bfloat16, True)):
        if value_head and s.get("advantage") == "reinforce":
            models.append(None)  # ppo.py builds no critic for REINFORCE
            continue
        with torch.device("meta"):
            m = M.CausalLM(cfg, value_head=value_head).to(dtype)
        m.requires_grad_(not frozen)  # the reference: frozen before sharding, as dist.load_sharded(frozen=True)
        m.gradient_checkpointing = s["grad_ckpt"]
        models.append(dist.shard(m, torch.bfloat16))
    return models


def _empty_copy(cfg, device):
    """decode_copy(model, copy=None)'s allocation (a bf16 CausalLM built on meta, then given storage), done so
    that it runs under FakeTensorMode: there Module.to() and to_empty() must swap each FakeTensor parameter, which
    fails because the fake mode holds weak references to its tensors. Built on (real) meta outside the fake mode,
    the parameters are replaced instead. decode_copy then refreshes it, one parameter at a time, as in ppo.py."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    with unset_fake_temporarily(), torch.device("meta"):
        copy = M.CausalLM(cfg).to(torch.bfloat16)
    return copy.to_empty(device=device)  # (CausalLM.to_empty keeps lm_head tied)


def run_iteration(cfg, s, probe, device, metas, passes=2, log=print):
    """Materialises `metas` (build_sharded) on `device`, then runs `passes` iterations of the phases; returns
    {phase: (peak bytes, bytes alive after)} (the max over passes) and an info dict (slots, capacity, ...).
    `s`: the settings (settings_from_args)."""
    import ppo
    import sample
    bf16 = torch.bfloat16
    world = dist.world()
    fake = isinstance(probe, FakeProbe)
    autocast = torch.autocast("cpu", bf16) if (fake and world == 1) else contextlib.nullcontext()
    peaks, info = {}, {}

    @contextlib.contextmanager
    def phase(name):
        probe.start()
        t0 = time.time()
        yield
        p, n = probe.peak(), probe.now()
        old = peaks.get(name, (0, 0))
        peaks[name] = (max(old[0], p), max(old[1], n))
        log(f"  {name:<14} peak {p / GiB:7.2f} GiB, alive after {n / GiB:7.2f} GiB  ({time.time() - t0:.0f} s)")

    # ---- load + shard (and, with --verifier judge, the judge: a full frozen bf16 copy on every rank) ----
    jcfg = s.get("judge_cfg")
    with phase("load + shard"):
        policy, critic, ref = (m.to_empty(device=device) if m is not None else None for m in metas)
        judge = _empty_copy(jcfg, device).requires_grad_(False) if jcfg is not None else None
        trained = [m for m in (policy, critic) if m is not None]
        if not fake:  # real memory: give it finite values (the plan's fake tensors have none)
            with torch.no_grad():
                for m in trained + [ref] + ([judge] if judge is not None else []):
                    for p in m.parameters():
                        p.normal_(0, 0.02)
        # AdamW as ppo.py makes it; foreach=True is what the default resolves to on CUDA (on a CPU it would pick
        # the per-tensor loop, whose temporaries are smaller), so the plan counts the GPU's temporaries
        opts = [torch.optim.AdamW(m.parameters(), lr=s[name], betas=(0.9, 0.95), weight_decay=0.0, foreach=True)
                for m, name in zip(trained, ("actor_lr", "critic_lr"))]
    del metas

    P, R = s["max_prompt_len"], s["max_new_tokens"]
    W = P + R
    rows = max(1, min(s["micro_batch"], s["micro_tokens"] // W))  # micro_batches: rows x width <= micro_tokens
    jobs = (s["rollout_batch"] // world) * s["n_samples"]
    copy = None
    for it in range(passes):
        log(f" pass {it + 1}/{passes}")
        # ---- decode copy (current_sampler) ----
        with phase("decode copy"):
            if copy is None and fake:
                copy = _empty_copy(cfg, device)  # what decode_copy(policy, None) allocates, see _empty_copy
            copy = sample.decode_copy(policy, copy, dtype=bf16)

        # ---- KV cache: generate's allocation, a full prefill, one decode step at full context ----
        with phase("KV cache"), torch.no_grad(), autocast:
            capacity = sample.round_capacity(W, "cuda")
            total = s["gpu_bytes"]
            budget = max(0, total - probe.now() - int(sample.GPU_MARGIN * total))  # = sample.kv_budget on the GPU
            slots = s["kv_slots"] or sample.choose_slots(cfg, jobs, capacity, bf16, "cuda", None, budget)
            info.update(slots=slots, capacity=capacity, jobs=jobs, kv_budget=budget,
                        kv_bytes=slots * sample.kv_bytes_per_slot(cfg, capacity, bf16))
            state = sample.DecodeState(copy, slots, capacity, bf16, device, use_graph=False)
            state.reset(0, R, 0, [int(cfg.eos_token_id or 0)])
            state.prefill(copy, [(b, [0] * P, b) for b in range(slots)], pad=0)  # every slot refilled at once
            state.cache.lengths.fill_(capacity - 1)  # full context: every row reads its whole cache
            state.step(copy, s["temperature"], 1.0)
            del state
        copy = None  # ppo.py frees the decode copy after the rollout, before scoring

        # ---- judge: judge.grade's generate, every slot prefilled with the response's tail at full length ----
        if judge is not None:
            with phase("judge"), torch.no_grad(), autocast:
                Pj = R + JUDGE_EXTRA  # the last 20 lines can be the whole response (one that has few newlines)
                jcap = sample.round_capacity(Pj + s["judge_max_new_tokens"], "cuda")
                total = s["gpu_bytes"]
                budget = max(0, total - probe.now() - int(sample.GPU_MARGIN * total))
                jslots = s["kv_slots"] or sample.choose_slots(jcfg, jobs, jcap, bf16, "cuda", None, budget)
                state = sample.DecodeState(judge, jslots, jcap, bf16, device, use_graph=False)
                info.update(judge_slots=jslots, judge_capacity=jcap,  # the bytes of the cache as allocated
                            judge_kv_bytes=sum(t.numel() * t.element_size() for t in (state.cache.k, state.cache.v)),
                            judge_weight_bytes=sum(p.numel() * p.element_size() for p in judge.parameters()))
                state.reset(0, s["judge_max_new_tokens"], 0, [int(jcfg.eos_token_id or 0)])
                state.prefill(judge, [(b, [0] * Pj, b) for b in range(jslots)], pad=0)
                state.cache.lengths.fill_(jcap - 1)
                state.step(judge, 0.0, 1.0)  # greedy
                del state

        # ---- score: old log-probs, reference log-probs, values; no grad ----
        x = torch.zeros(rows, W, dtype=torch.long, device=device)
        starts = torch.full((rows,), P, dtype=torch.long, device=device)  # every row: a full prompt, then R tokens
        score = functools.partial(ppo.forward_response, ids=x, starts=starts, R=R, temperature=s["temperature"],
                                  dtype=bf16)
        for m in trained:
            m.eval()
        with phase("score"), torch.no_grad(), autocast:
            lp, e = score(policy)
            rlp, _ = score(ref)
            v = score(critic, values=True) if critic is not None else torch.zeros_like(lp)
            old_lp, old_v = lp.float(), v.float()
            del lp, e, rlp, v

        # ---- train: two micro-batches (the second holds the first's gradients) ----
        for m in trained:
            m.train()
        adv = torch.zeros(rows, R, device=device)
        returns, mask = torch.zeros_like(adv), torch.ones_like(adv)
        denom = float(rows * R if s["loss_agg"] == "token-mean" else rows)  # the losses' minibatch count
        with phase("train"), autocast:
            for _ in range(2):
                lp, _ = score(policy)
                loss, _ = ppo.policy_loss(lp.float(), old_lp, adv, mask, 0.2, s["loss_agg"], denom)
                if critic is not None:
                    v = score(critic, values=True)
                    loss = loss + ppo.value_loss(v, old_v, returns, mask, s["value_clip"], s["loss_agg"], denom)[0]
                    del v
                (loss * world).backward()
                del lp, loss
        del x, adv, returns, mask, old_lp, old_v

        # ---- optimizer: clip, step (Adam moments appear on the first pass), zero_grad ----
        with phase("optimizer"):
            for m, opt in zip(trained, opts):
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

        # ---- checkpoint: rank 0 gathers each tensor and copies it to the host ----
        with phase("checkpoint"), probe.host_copies():
            sds = [dist.full_state_dict(m) for m in trained]
            del sds
    info["params"] = policy.num_params() if hasattr(policy, "num_params") else None
    return peaks, info


# ----------------------------------------------------------------------------------------------------
# The fake world
# ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def fake_world(world):
    """A process group of `world` ranks in this process, this process being rank 0 (torch's fake backend:
    collectives do nothing). world 1: no process group (dist.* helpers are no-ops, as without torchrun)."""
    if world == 1:
        yield
        return
    if td.is_initialized():
        raise RuntimeError("plan: a process group is already running (run the plan outside torchrun, or use --measure)")
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend
    td.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
    try:
        yield
    finally:
        td.destroy_process_group()


@contextlib.contextmanager
def _torch_kernels():
    previous = longcot_kernels.backend()
    longcot_kernels.set_backend("torch")  # Triton kernels cannot run on fake tensors; their torch references can
    try:
        yield
    finally:
        longcot_kernels.set_backend(previous)


def plan(cfg, s, world, passes=2, log=print):
    """The plan: {phase: (peak bytes, bytes alive after)} for rank 0 of `world` ranks, and info."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with fake_world(world), _torch_kernels(), _cpu_only():
        metas = build_sharded(cfg, s)
        fake = FakeTensorMode(allow_non_fake_inputs=True)  # the meta-built models enter as fake tensors
        tracker = Tracker()
        with fake, tracker:
            return run_iteration(cfg, s, FakeProbe(tracker), torch.device("cpu"), metas, passes, log)


@contextlib.contextmanager
def _cpu_only():
    """The plan's fake tensors are CPU tensors: on a machine with a GPU, make dist.shard build a CPU mesh too."""
    if not torch.cuda.is_available():
        yield
        return
    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        yield
    finally:
        torch.cuda.is_available = real


def measure(cfg, s, log=print):
    """--measure: the same phases on real CUDA tensors, in this process's world (torchrun or one process)."""
    if not torch.cuda.is_available():
        raise ValueError("--measure needs a CUDA GPU (the plan alone: drop --measure)")
    rank, world, device = dist.init()
    torch.cuda.empty_cache()
    return run_iteration(cfg, s, CudaProbe(), device, build_sharded(cfg, s), passes=2, log=log)


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------
def settings_from_args(args):
    """What the plan needs from ppo.py's arguments (after the preset is applied)."""
    return dict(
        max_prompt_len=args.max_prompt_len, max_new_tokens=args.max_new_tokens, micro_tokens=args.micro_tokens,
        micro_batch=args.micro_batch, rollout_batch=args.rollout_batch, n_samples=args.n_samples,
        temperature=args.temperature, value_clip=args.value_clip, actor_lr=args.actor_lr, critic_lr=args.critic_lr,
        grad_ckpt=bool(args.grad_ckpt), gpu_bytes=int(args.gpu_memory * GB),
        loss_agg=args.loss_agg, kv_slots=args.kv_slots, advantage=args.advantage,
        judge_cfg=M.config_for(args.judge_model) if args.verifier == "judge" else None,
        judge_max_new_tokens=args.judge_max_new_tokens)


def table(peaks, budget, measured=None):
    """Rows (phase, peak GiB, budget GiB, headroom %, measured GiB or None)."""
    out = []
    for name in PHASES:
        if name in peaks:
            p = peaks[name][0]
            mp = measured[name][0] / GiB if measured and name in measured else None
            out.append((name, p / GiB, budget / GiB, 100.0 * (budget - p) / budget, mp))
    return out


def report(rows, info, title):
    lines = [title, f"{'phase':<14} {'peak GiB':>9} {'budget':>8} {'headroom':>9}" +
             (f" {'measured':>9}" if any(r[4] is not None for r in rows) else "")]
    for name, p, b, h, mp in rows:
        lines.append(f"{name:<14} {p:9.2f} {b:8.2f} {h:8.1f}%" + (f" {mp:9.2f}" if mp is not None else ""))
    lines.append(f"KV cache: {info['slots']} slots x {info['capacity']} tokens = {info['kv_bytes'] / GiB:.2f} GiB "
                 f"(sample.choose_slots from a budget of {info['kv_budget'] / GiB:.2f} GiB; {info['jobs']} jobs per "
                 f"rank, the rest queue)")
    if "judge_slots" in info:
        lines.append(f"judge: weights {info['judge_weight_bytes'] / GiB:.2f} GiB (bf16, whole on every rank), KV cache "
                     f"{info['judge_slots']} slots x {info['judge_capacity']} tokens = "
                     f"{info['judge_kv_bytes'] / GiB:.2f} GiB")
    worst = min(rows, key=lambda r: r[3])
    verdict = "fits" if worst[3] >= 0 else "does not fit"
    lines.append(f"{verdict}: tightest phase '{worst[0]}' at {worst[1]:.2f} of {worst[2]:.2f} GiB "
                 f"({worst[3]:.1f}% headroom)")
    return "\n".join(lines), worst[3] >= 0


def main(args):
    """ppo.py --plan: print the table; returns the exit status (0 fits, 1 does not fit)."""
    cfg = M.config_for(args.model, args.rope_theta, args.max_prompt_len + args.max_new_tokens)
    s = settings_from_args(args)
    world = int(args.gpus)
    title = (f"memory plan: {args.model} on {world} x {args.gpu_memory:g} GB (budget {s['gpu_bytes'] / GiB:.1f} GiB "
             f"per rank), prompts <= {s['max_prompt_len']} + {s['max_new_tokens']} new tokens, micro-batch "
             f"{s['micro_tokens']} tokens, gradient checkpointing {'on' if s['grad_ckpt'] else 'off'}, "
             f"torch {torch.__version__}")
    t0 = time.time()
    measured, rank = None, 0
    if args.measure:  # GPU: measure in this world, then plan the same world on rank 0
        measured, _ = measure(cfg, s, log=dist.print0)
        rank, world = dist.rank(), dist.world()
        if td.is_initialized():
            td.destroy_process_group()
    if rank == 0:
        peaks, info = plan(cfg, s, world, log=print)
        rows = table(peaks, s["gpu_bytes"], measured)
        text, ok = report(rows, info, title + f" ({time.time() - t0:.0f} s)")
        print(text, flush=True)
        if getattr(args, "plan_out", None):
            tmp = args.plan_out + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"title": title, "info": info, "fits": ok,
                           "phases": [dict(phase=r[0], peak_gib=r[1], budget_gib=r[2], headroom_pct=r[3],
                                           measured_gib=r[4]) for r in rows]}, f, indent=2)
            os.replace(tmp, args.plan_out)
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit("run the plan through ppo.py: python ppo.py --model qwen-math-7b --plan --gpus 8 --gpu-memory 80")
