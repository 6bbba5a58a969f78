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
    dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=dev)
    td.all_reduce(t)
    return {k: v / world() for k, v in zip(keys, t.tolist())}


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """All-reduce sum of a tensor (in place on a copy); identity without torchrun."""
    if world() == 1:
        return t
    t = t.clone()
    td.all_reduce(t)
    return t


def broadcast_object(obj, src=0):
    if world() == 1:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]
