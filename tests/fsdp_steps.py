"""Three AdamW steps on the tiny model, in one process or under torchrun (FSDP2); used by test_dist.py.

    python tests/fsdp_steps.py OUT_DIR START                                   # one process, whole batch
    torchrun --standalone --nproc_per_node 2 tests/fsdp_steps.py OUT_DIR START  # each rank half the batch
    torchrun ... tests/fsdp_steps.py OUT_DIR START --torch211-hooks             # FSDP2 hooks as torch <= 2.12
START: a saved model directory, loaded with dist.load_sharded (under torchrun: built on the meta device, each
rank reading only its own shards). Writes OUT_DIR/losses.json and a Hugging Face checkpoint OUT_DIR/ckpt
(gathered on rank 0).

--torch211-hooks: torch <= 2.12 attached FSDP2's pre-backward hook (which re-gathers a module's freed weights
before its backward) only to the tensors found by pytree-flattening the module's output; torch 2.13 walks
dataclasses too. The flag puts the old collection back on a newer torch, so the 2-rank test sees what a
torch 2.11 GPU machine would.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dist  # noqa: E402
import model as M  # noqa: E402

out_dir = sys.argv[1]
if "--torch211-hooks" in sys.argv:
    import torch.distributed.fsdp._fully_shard._fsdp_state as fsdp_state
    import torch.utils._pytree as pytree
    if hasattr(fsdp_state, "collect_grad_tensors"):  # newer torch; on torch <= 2.12 the old behaviour is native
        fsdp_state.collect_grad_tensors = lambda output: tuple(
            t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad)
rank, world, device = dist.init()
torch.manual_seed(0)
net, tok = dist.load_sharded(sys.argv[2], torch.float32, device, param_dtype=None)  # fp32 compute: 1 and 2 agree
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.1)
g = torch.Generator().manual_seed(1)
batch = torch.randint(3, 99, (4, 24), generator=g)  # same 4 rows everywhere; each rank takes its share
rows = batch.chunk(world)[rank]
losses = []
for step in range(3):
    out = net(rows[:, :-1], labels=rows[:, 1:])
    loss = -out.logprobs.mean()  # equal rows per rank: mean of rank means = global mean
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(dist.mean({"loss": loss.item()})["loss"])
sd = dist.full_state_dict(net)
if rank == 0:
    M.save(net, tok, os.path.join(out_dir, "ckpt"), state_dict=sd)
    with open(os.path.join(out_dir, "losses.json"), "w") as f:
        json.dump(losses, f)
dist.barrier()
print(f"fsdp_steps: rank {rank} done", end="")  # unflushed: dist.cleanup must flush it before it ends the process
dist.cleanup()
if world > 1:
    sys.exit(3)  # not reached: under torchrun dist.cleanup ends the process with status 0
