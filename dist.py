"""The distributed layer: a thin wrapper over torch.distributed and FSDP2, a no-op without torchrun.

    rank, world, device = dist.init()          # reads torchrun's env; one process: (0, 1, cuda or cpu)
    model = dist.shard(model)                  # FSDP2: fully_shard each block, then the root
    sd = dist.full_state_dict(model)           # gathered full weights (on rank 0, on the CPU) for saving
    metrics = dist.mean(metrics)               # average a dict of floats over ranks
    dist.print0("hello")                       # print on rank 0 only

Why a separate file: every script (sft.py, ppo.py, eval.py, sample.py) needs these few lines, and keeping
the torchrun plumbing out of model.py keeps the model readable.
Run under torchrun: `torchrun --standalone --nproc_per_node 8 ppo.py ...`; on a CPU the backend is gloo.
"""
import os

import torch
import torch.distributed as td


def init():
    """Start the process group when launched by torchrun; returns (rank, world_size, device)."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not td.is_initialized():
        td.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return td.get_rank(), td.get_world_size(), device


def _device():
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def rank():
    return td.get_rank() if td.is_initialized() else 0


def world():
    return td.get_world_size() if td.is_initialized() else 1


def print0(*args, **kwargs):
    if rank() == 0:
        print(*args, **kwargs, flush=True)


def barrier():
    if world() > 1:
        td.barrier()


def cleanup():
    if td.is_initialized():
        td.barrier()  # without it gloo ranks sometimes abort in destroy while a peer is still finishing
        td.destroy_process_group()


def shard(model, param_dtype=torch.bfloat16, reduce_dtype=torch.float32, reshard_after_forward=True):
    """FSDP2 (`fully_shard`) per transformer block, then the root (embeddings, final norm, lm_head).
    Parameters stay fp32 shards (the optimizer's master copy); compute runs in `param_dtype` (None: the
    parameters' own dtype) and gradients are reduced in `reduce_dtype`. Without torchrun: returns model."""
    if world() == 1:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (world(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for block in model.model.layers:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


def compute_dtype(name, device):
    """--dtype: "auto" is bf16 on a GPU and fp32 on a CPU (exact, and what the tests compare)."""
    if name not in ("auto", "bf16", "fp32"):
        raise ValueError(f"--dtype {name!r}: expected auto, bf16 or fp32")
    return torch.bfloat16 if name == "bf16" or (name == "auto" and torch.device(device).type == "cuda") else torch.float32


def autocast(device, dtype=torch.bfloat16):
    """bf16 autocast for one process on a GPU (fp32 master weights); under FSDP (its MixedPrecisionPolicy
    casts) and on the CPU (fp32 for exactness): a no-op context."""
    on = world() == 1 and torch.device(device).type == "cuda" and dtype != torch.float32
    return torch.autocast("cuda", dtype=dtype, enabled=on)


def full_state_dict(model, rank0_only=True):
    """The full (unsharded) state dict. rank0_only: gathered onto rank 0's CPU (others get {}), for saving;
    else every rank gets full tensors on its device (sample.py's decode copy of the policy)."""
    if world() == 1:
        return {k: v.detach() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    opts = StateDictOptions(full_state_dict=True, cpu_offload=rank0_only)
    return get_model_state_dict(model, options=opts)


def optimizer_state_dict(model, optimizer):
    """Full optimizer state on rank 0 (for exact resume across a different number of ranks too)."""
    if world() == 1:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state_dict(model, optimizer, state):
    if world() == 1:
        return optimizer.load_state_dict(state)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def load_full_state_dict(model, state):
    """Load a full state dict (present on rank 0; may be {} elsewhere) into a (sharded) model."""
    if world() == 1:
        return model.load_state_dict(state)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def mean(metrics: dict) -> dict:
    """Average each float of `metrics` over ranks (one all-reduce for the whole dict)."""
    if world() == 1 or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=_device())
    td.all_reduce(t)
    return {k: v / world() for k, v in zip(keys, t.tolist())}


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """All-reduce sum of a tensor (in place on a copy); identity without torchrun."""
    if world() == 1:
        return t
    out = t.to(_device(), copy=True)  # NCCL reduces CUDA tensors only
    td.all_reduce(out)
    return out.to(t.device)


def max_int(n: int) -> int:
    """The largest n over ranks (e.g. micro-batch counts: every rank must run the same number of forwards)."""
    if world() == 1:
        return n
    t = torch.tensor([n], dtype=torch.long, device=_device())
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return int(t.item())


def gather_objects(obj, dst=0):
    """[obj of rank 0, obj of rank 1, ...] on rank dst (None elsewhere); [obj] without torchrun."""
    if world() == 1:
        return [obj]
    out = [None] * world() if rank() == dst else None
    td.gather_object(obj, out, dst=dst)
    return out


def broadcast_object(obj, src=0):
    if world() == 1:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


# ----------------------------------------------------------------------------------------------------
# Checkpoints: Hugging Face weights + trainer state, written atomically by rank 0
# ----------------------------------------------------------------------------------------------------
def save_checkpoint(path, models: dict, optimizers: dict, tokenizer, state: dict):
    """Write `path/` = one HF model directory per entry of `models` ({"policy": m, "critic": c} -> path/policy,
    path/critic; a single entry "model" -> path itself) plus path/trainer_state.pt (optimizer states, the
    caller's `state`: step, data position, RNG). Written to a temporary directory and renamed, so a kill
    while saving leaves the previous checkpoint intact. Every rank must call it (the gathers are collective)."""
    import shutil
    import model as M
    sds = {name: full_state_dict(m) for name, m in models.items()}
    opts = {name: optimizer_state_dict(models[name], o) for name, o in optimizers.items()}
    if rank() == 0:
        tmp = path.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for name, m in models.items():
            M.save(m, tokenizer, tmp if name == "model" else os.path.join(tmp, name), state_dict=sds[name])
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        torch.save({"optimizers": opts, "state": state, "rng": rng}, os.path.join(tmp, "trainer_state.pt"))
        old = path.rstrip("/") + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(path):
            os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    barrier()


def load_checkpoint(path, models: dict, optimizers: dict):
    """Restore weights, optimizer states and RNG written by save_checkpoint; returns the caller's `state`."""
    from safetensors.torch import load_file
    for name, m in models.items():
        d = path if name == "model" else os.path.join(path, name)
        files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        sd = {}
        for f in files:
            for k, v in load_file(os.path.join(d, f)).items():
                sd[k if f != "value_head.safetensors" else "value_head." + k] = v
        if getattr(m.cfg, "tie_word_embeddings", False):
            sd.setdefault("lm_head.weight", sd["model.embed_tokens.weight"])
        load_full_state_dict(m, sd)
    ts = torch.load(os.path.join(path, "trainer_state.pt"), weights_only=False)
    for name, o in optimizers.items():
        load_optimizer_state_dict(models[name], o, ts["optimizers"][name])
    torch.set_rng_state(ts["rng"]["torch"])
    if ts["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ts["rng"]["cuda"])
    return ts["state"]
