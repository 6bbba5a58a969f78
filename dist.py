"""The distributed layer: a thin wrapper over torch.distributed and FSDP2, a no-op without torchrun.

    rank, world, device = dist.init()          # reads torchrun's env; one process: (0, 1, cuda or cpu)
    model = dist.shard(model)                  # FSDP2: fully_shard each block, then the root
    sd = dist.full_state_dict(model)           # gathered full weights (on rank 0, on the CPU) for saving
    metrics = dist.mean(metrics)               # average a dict of floats over ranks
    dist.print0("hello")                       # print on rank 0 only
    path, state = dist.load_checkpoint(out, {"model": model}, {"model": opt})   # newest complete OUT/checkpoint-N
    dist.save_checkpoint(out, step, {"model": model}, {"model": opt}, tok, {"step": step})   # crash-safe
    log = dist.metrics_log(out, "step", step)   # OUT/metrics.jsonl, trimmed to the resumed checkpoint

Why a separate file: every script (sft.py, ppo.py, eval.py, sample.py) needs these few lines, and keeping
the torchrun plumbing out of model.py keeps the model readable.
Run under torchrun: `torchrun --standalone --nproc_per_node 8 ppo.py ...`; on a CPU the backend is gloo.
"""
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import warnings
from datetime import timedelta

import torch
import torch.distributed as td


def init(timeout_minutes=120):
    """Start the process group when launched by torchrun; returns (rank, world_size, device).
    timeout_minutes: how long a rank waits in a collective before the job is aborted. NCCL's default (10
    minutes) kills the ranks that wait while another finishes a long generation or rank 0 writes a checkpoint."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not td.is_initialized():
        td.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                              timeout=timedelta(minutes=timeout_minutes))
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
    """The last call of a script that ran under torchrun and succeeded: wait for every rank, destroy the process
    group, flush stdout and stderr, and end the process at once with status 0 (os._exit). A no-op without torchrun.
    Why end at once: with gloo on a CPU, about one 2-rank run in 20 (more on a loaded machine) had a rank abort
    ("terminate called without an active exception", SIGABRT) after its script had finished, during the
    interpreter's shutdown (faulthandler showed no Python frame left), which failed a run whose files were all
    written; os._exit skips that shutdown (atexit handlers, object finalizers), and every file we write is closed
    or flushed by then. Not for an error path: there the exception ends the process and torchrun stops the other
    ranks, where a barrier would wait for ranks stuck in another collective."""
    if td.is_initialized():
        td.barrier()  # without it gloo ranks sometimes abort in destroy while a peer is still finishing
        td.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def shard(model, param_dtype=torch.bfloat16, reduce_dtype=torch.float32):
    """FSDP2 (`fully_shard`) per transformer block, then the root (embeddings, final norm, lm_head, value head).
    Parameters stay fp32 shards (the optimizer's master copy); compute runs in `param_dtype` (None: the
    parameters' own dtype) and gradients are reduced in `reduce_dtype`. Without torchrun: returns model.
    Each block frees its gathered weights after forward and re-gathers them in backward. The root does not
    (reshard_after_forward=False): its weights are needed again at once by the loss, and on torch <= 2.12 FSDP2
    re-gathers a module before backward only through hooks on tensors it finds in the module's output, which
    a root freed after forward would depend on (model.Output is registered with pytree for the same reason).
    A frozen model (no parameter requires grad: the PPO reference) runs no backward, so its root is freed too."""
    if world() == 1:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (world(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for block in model.model.layers:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=True)
    frozen = not any(p.requires_grad for p in model.parameters())
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=frozen)
    return model


def load_sharded(name, dtype, device, value_head=False, param_dtype=torch.bfloat16, seed=0, frozen=False,
                 rope_theta=None, max_positions=None):
    """model.load + shard without a full model on any GPU: (model, tokenizer).
    One process, or the built-in tiny model: model.load, then shard. A checkpoint under torchrun: the model is
    built on the meta device, sharded, and each rank copies in only its own dim-0 chunk of every weight, read
    one tensor at a time from the (memory-mapped) safetensors files on the CPU. At 7B the old way (load whole,
    then shard) put policy + critic in fp32 and the reference in bf16 on every GPU at once: ~76 GB.
    frozen: no parameter requires grad (set before sharding: see shard). rope_theta, max_positions: replace the
    checkpoint's (model.with_context)."""
    import model as M
    ctx = dict(rope_theta=rope_theta, max_positions=max_positions)
    if world() == 1 or name == "tiny":
        net, tok = M.load(name, dtype=dtype, device=device, value_head=value_head, seed=seed, **ctx)
        return shard(net.requires_grad_(not frozen), param_dtype), tok
    net, tok = M.load(name, dtype=dtype, device="meta", value_head=value_head, **ctx)
    net.requires_grad_(not frozen)
    path = M.local_dir(name)  # (a hub id: model.load has downloaded it into the cache already)
    net = shard(net, param_dtype)
    net.to_empty(device=device)
    params = dict(net.named_parameters())  # tied lm_head/embeddings: one entry, filled once
    with torch.no_grad():
        for key, full in M.read_weights(path, net, dtype, "cpu"):  # names and shapes checked there
            if key not in params:  # lm_head.weight of a tied model is not yielded; nothing else is missing
                continue
            p = params[key]
            local = p.to_local() if hasattr(p, "to_local") else p
            chunks = torch.chunk(full, world(), dim=0)  # FSDP2's dim-0 layout: rank r holds chunk r (or none)
            mine = chunks[rank()] if rank() < len(chunks) else full[:0]
            if mine.shape != local.shape:
                raise RuntimeError(f"{key}: shard shape {tuple(local.shape)} differs from chunk {tuple(mine.shape)}")
            local.copy_(mine)
    return net, tok


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
# Checkpoints: numbered folders, each complete before OUT/latest names it; a crash at any instant loses nothing
# ----------------------------------------------------------------------------------------------------
# OUT/checkpoint-N/            N: the caller's step (sft.py: optimizer step; ppo.py: iteration)
#     config.json, *.safetensors, tokenizer files     sft.py's model (the entry "model"), Hugging Face format
#     policy/, critic/                                ppo.py: one Hugging Face directory per model
#     trainer/                                        model + optimizer states, sharded: torch.distributed.checkpoint
#     rng-<rank>.pt                                   every rank's random number generators
#     state.json                                      the caller's state (step, data position) and the world size
#     complete.json                                   written last, after every file above is fsync'd
# OUT/latest                                          "checkpoint-N": replaced by an atomic rename once N is complete
# The Hugging Face weights are gathered on rank 0 (for users: model.load, eval.py, transformers); resuming reads
# the sharded trainer/ instead, so no rank ever holds another rank's share of the weights or optimizer states.
CRASH_POINTS = ("begin", "weights", "trainer", "rng", "marker", "pointer-tmp", "pointer", "trash")
_CKPT = re.compile(r"checkpoint-(\d+)")


def _crash(point):
    os.kill(os.getpid(), signal.SIGKILL)


def _crash_point(point, step):
    """Testing: LONGCOT_CRASH_AT=<point> (or <point>:<step>, that step's save only) kills this process right after
    that point of save_checkpoint (one of CRASH_POINTS)."""
    if os.environ.get("LONGCOT_CRASH_AT") in (point, f"{point}:{step}"):
        _crash(point)


def _fsync(path):
    """Flush a file, or a directory's entries (new, renamed, removed names), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """`with atomic_open(path) as f: f.write(...)`: the writes go to PATH.tmp in the same folder, which is fsync'd
    and renamed over `path` when the block ends without an error (a reader, or the run after a crash, sees the
    old file or the new one, never a part). An error inside the block removes PATH.tmp and leaves `path` as it
    was. For large outputs too (JSONL written row by row): nothing is held in memory. Text is UTF-8.
    A symlink or something that is not a regular file (/dev/stdout, a pipe) is written straight through: a
    rename would put a plain file in its place."""
    path = os.fspath(path)
    enc = {} if "b" in mode else {"encoding": "utf-8"}
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        with open(path, mode, **enc) as f:
            yield f
        return
    tmp = path + ".tmp"
    f = open(tmp, mode, **enc)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
        f.close()
        os.remove(tmp)
        raise
    f.close()
    os.replace(tmp, path)
    _fsync(os.path.dirname(os.path.abspath(path)))


def write_atomic(path, text: str):
    """Replace `path` with `text` all at once (atomic_open)."""
    with atomic_open(path) as f:
        f.write(text)


def _complete(out_dir):
    """{N: folder} of the checkpoints whose completion marker is written."""
    found = {}
    for name in os.listdir(out_dir) if os.path.isdir(out_dir) else []:
        m = _CKPT.fullmatch(name)
        if m and os.path.exists(os.path.join(out_dir, name, "complete.json")):
            found[int(m.group(1))] = os.path.join(out_dir, name)
    return found


def latest_checkpoint(out_dir):
    """OUT/checkpoint-N of the newest complete checkpoint of a run (its Hugging Face weights: the folder itself for
    sft.py, policy/ and critic/ in it for ppo.py), or None. Reads OUT/latest; a folder that is complete but newer
    than the pointer (the run stopped between the two) wins, and a missing or torn pointer falls back to the
    highest-numbered complete folder. Folders without complete.json (a save cut short) are ignored. No collectives."""
    found = _complete(out_dir)
    if not found:
        return None
    try:
        with open(os.path.join(out_dir, "latest")) as f:
            named = f.read().strip()
    except OSError:
        named = None
    best = found[max(found)]
    if named != os.path.basename(best):  # a crash between the marker and the pointer, or a torn pointer
        said = f"names {named!r}" if named is not None else "is missing"
        print(f"{out_dir}/latest {said}; using {best}, the newest complete checkpoint", flush=True)
    return best


def _trainer_state(models: dict, optimizers: dict):
    """{name: {"model": sharded state dict, "optimizer": sharded state dict}}: every rank holds its own shards only
    (DTensors under FSDP, plain tensors in one process); torch.distributed.checkpoint saves and loads it in place."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    out = {}
    for name, m in models.items():
        out[name] = {"model": get_model_state_dict(m)}
        if name in optimizers:  # (a fresh optimizer gets its state initialised here, for an in-place load)
            out[name]["optimizer"] = get_optimizer_state_dict(m, optimizers[name])
    return out


def _dcp(fn, state, path):
    with warnings.catch_warnings():  # one process: "assuming the intent is to save in a single process" is right
        warnings.filterwarnings("ignore", message=".*single process")
        fn(state, checkpoint_id=path, no_dist=world() == 1)


def save_checkpoint(out_dir, step: int, models: dict, optimizers: dict, tokenizer, state: dict, keep: int = 1):
    """Write OUT/checkpoint-<step>/ (layout above), then point OUT/latest at it, then delete all but the `keep`
    newest complete checkpoints. models: {"model": m} (its HF weights go in the folder itself) or {"policy": p,
    "critic": c} (subfolders); optimizers: {same name: optimizer}; state: the caller's, JSON (step, data position).
    Every rank must call it (gathers and the sharded save are collective). A crash at any point leaves the previous
    checkpoint loadable, or this one complete. Returns the folder."""
    import torch.distributed.checkpoint as dcp
    import model as M
    path = os.path.join(out_dir, f"checkpoint-{step}")
    if rank() == 0:
        for name in os.listdir(out_dir):  # leftovers of a save cut short: an unfinished folder, a half-deleted one
            full = os.path.join(out_dir, name)
            m = re.fullmatch(r"checkpoint-(\d+)(\.trash)?", name)
            done = os.path.exists(os.path.join(full, "complete.json"))
            if m and (m.group(2) or int(m.group(1)) == step or not done):
                shutil.rmtree(full)
        os.makedirs(path)
    barrier()
    _crash_point("begin", step)
    for name, m in models.items():  # 1. HF weights: one full model at a time on rank 0's CPU
        sd = full_state_dict(m)
        if rank() == 0:
            M.save(m, tokenizer, path if name == "model" else os.path.join(path, name), state_dict=sd)
        del sd
    _crash_point("weights", step)
    _dcp(dcp.save, _trainer_state(models, optimizers), os.path.join(path, "trainer"))  # 2. each rank its shards
    _crash_point("trainer", step)
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(),  # 3. RNG of this rank; the caller's state
           "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    with atomic_open(os.path.join(path, f"rng-{rank()}.pt"), "wb") as f:
        torch.save(rng, f)
    if rank() == 0:
        write_atomic(os.path.join(path, "state.json"), json.dumps({"step": step, "world": world(), "state": state}))
    _crash_point("rng", step)
    barrier()  # every rank's files are written
    if rank() == 0:
        for root, dirs, files in os.walk(path):  # 4. everything on disk, then the marker
            for f in files:
                _fsync(os.path.join(root, f))
            _fsync(root)
        write_atomic(os.path.join(path, "complete.json"), json.dumps({"step": step, "world": world()}))
        _crash_point("marker", step)
        latest = os.path.join(out_dir, "latest")  # 5. the pointer: written aside, then renamed over the old one
        with open(latest + ".tmp", "w") as f:
            f.write(os.path.basename(path) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _crash_point("pointer-tmp", step)
        os.replace(latest + ".tmp", latest)
        _fsync(out_dir)
        _crash_point("pointer", step)
        found = _complete(out_dir)  # 6. older checkpoints: renamed away (atomic), then deleted
        older = sorted(n for n in found if n < step)
        for n in [n for n in found if n > step] + older[:max(0, len(older) - (keep - 1))]:
            os.rename(found[n], found[n] + ".trash")
            _fsync(out_dir)
            _crash_point("trash", step)
            shutil.rmtree(found[n] + ".trash")
    barrier()
    return path


def load_checkpoint(out_dir, models: dict, optimizers: dict):
    """Restore the newest complete checkpoint of OUT (latest_checkpoint) into `models` and `optimizers` (same
    names as at save) and every rank's RNG. Returns (folder, the caller's state), or (None, None) when OUT has no
    complete checkpoint. Needs the world size it was saved with (the RNG and data split are per rank)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
    path = broadcast_object(latest_checkpoint(out_dir) if rank() == 0 else None)  # one answer for every rank
    if path is None:
        old = os.path.join(out_dir, "checkpoint", "trainer_state.pt")
        if os.path.exists(old):
            raise ValueError(f"{old}: a checkpoint of an older longcot that this version cannot resume; start "
                             f"from its weights with --model {os.path.dirname(old)} and a new --out")
        return None, None
    with open(os.path.join(path, "state.json")) as f:
        meta = json.load(f)
    if meta["world"] != world():
        raise ValueError(f"{path} was saved by {meta['world']} ranks and this run has {world()}: resume with "
                         f"--nproc_per_node {meta['world']}, or start a new --out from its weights (--model {path})")
    sd = _trainer_state(models, optimizers)
    _dcp(dcp.load, sd, os.path.join(path, "trainer"))  # in place, each rank its own shards
    for name, m in models.items():
        set_model_state_dict(m, sd[name]["model"])
        if name in optimizers:
            set_optimizer_state_dict(m, optimizers[name], sd[name]["optimizer"])
    rng = torch.load(os.path.join(path, f"rng-{rank()}.pt"), weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return path, meta["state"]


# ----------------------------------------------------------------------------------------------------
# The metrics log: OUT/metrics.jsonl, one JSON object per line, trimmed on resume to what the checkpoint covers
# ----------------------------------------------------------------------------------------------------
def read_log(path):
    """The rows of a JSONL log. A last line that is not JSON (the writer was killed mid-line) is returned apart as
    `torn` (else None); a bad line anywhere else is an error naming the file and line. Returns (rows, torn)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    rows, torn = [], None
    for i, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i < len(lines):
                raise ValueError(f"{path}:{i}: invalid JSON ({e.msg}): {line[:80]!r}") from None
            torn = line
    return rows, torn


def metrics_log(out_dir, key, step):
    """Open OUT/metrics.jsonl to append rows, after trimming it to the run's state: step is the resumed checkpoint's
    step (rows logged after it come from iterations about to run again: dropped, so none appears twice), None
    when the run starts afresh (all rows dropped). A torn last line is dropped too. The file is rewritten
    atomically, and each drop is printed. Returns log(row): appends one line on rank 0 (a no-op elsewhere)."""
    if rank() != 0:
        return lambda row: None
    path = os.path.join(out_dir, "metrics.jsonl")
    if os.path.exists(path):
        rows, torn = read_log(path)
        keep = [r for r in rows if step is not None and r.get(key, 0) <= step]
        if torn is not None:
            print(f"{path}: dropped a torn last line (killed while writing it): {torn[:80]!r}", flush=True)
        if len(keep) < len(rows):
            n = len(rows) - len(keep)
            print(f"{path}: dropped {n} row{'s' * (n != 1)} logged after "
                  + (f"the checkpoint at {key} {step} (they will be logged again)" if step is not None
                     else "the start of a run that saved no checkpoint (it starts again)"), flush=True)
        if torn is not None or len(keep) < len(rows):
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))
    f = open(path, "a")

    def log(row):
        f.write(json.dumps(row) + "\n")
        f.flush()
    return log


# ----------------------------------------------------------------------------------------------------
# Command-line input: every script checks its flags right after parsing, before any model loads or any work
# ----------------------------------------------------------------------------------------------------
def arg_error(flag, message):
    """Refuse bad command-line input: one line `error: FLAG: MESSAGE` on stderr, exit status 2 (argparse's, for
    usage errors), no traceback. Under torchrun every rank exits; rank 0 says why."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {flag}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def require(ok, flag, got, expected):
    """arg_error(flag, "got GOT, expected EXPECTED") unless ok."""
    if not ok:
        arg_error(flag, f"got {got}, expected {expected}")


def check_writable(flag, path, folder=True):
    """Before any work: the run folder `path` (folder=True) or the folder of the output file `path` is created if
    needed and a probe file is written in it and removed, so an unwritable --out fails now, not after hours."""
    d = os.fspath(path) if folder else os.path.dirname(os.path.abspath(path))
    what = "a folder that can be created and written" if folder else "a file path in a folder that can be written"
    if not folder and os.path.isdir(path):
        arg_error(flag, f"got {path}, expected a file path (it is a folder)")
    try:
        os.makedirs(d, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        arg_error(flag, f"got {path}, expected {what} ({e.strerror}: {e.filename or d})")


def resume_args(out_dir, args: dict, ignore=(), allow=False, allow_flag="--allow-changed-args"):
    """The content of OUT/args.json for a run about to start or resume in OUT. When OUT/args.json exists and its
    arguments differ from `args` (apart from `ignore`: flags that do not change what the run computes, and flags
    the saved file does not know, from an older version), the run is refused with the list of differences (exit 2),
    so two configurations never mix in one run; with `allow` it goes on and the differences are appended to the
    saved history "args_changes". Returns {**args, "args_changes": [...]} (no history for a fresh run)."""
    path = os.path.join(out_dir, "args.json")
    if not os.path.exists(path):
        return dict(args)
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        arg_error("--out", f"{path}: cannot read the saved arguments ({e}); use another --out or delete it")
    new = json.loads(json.dumps(args))  # as it would be saved (tuples -> lists)
    changed = {k: (saved[k], v) for k, v in new.items() if k not in ignore and k in saved and saved[k] != v}
    history = saved.get("args_changes", [])
    if changed and not allow:
        diff = "; ".join(f"--{k.replace('_', '-')}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        arg_error("--out", f"{out_dir} holds a run made with other arguments ({diff}); resuming would mix two "
                           f"configurations: use another --out, or pass {allow_flag} to continue it anyway "
                           f"(the change is recorded in args.json)")
    if changed and os.environ.get("RANK", "0") == "0":
        print(f"{out_dir}: continuing with changed arguments (recorded in args.json): "
              + "; ".join(f"--{k.replace('_', '-')}: {a!r} -> {b!r}" for k, (a, b) in changed.items()), flush=True)
        history = history + [{k: {"saved": a, "new": b} for k, (a, b) in changed.items()}]
    return {**args, **({"args_changes": history} if history else {})}
