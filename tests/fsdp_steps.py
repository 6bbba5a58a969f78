"""Three AdamW steps on the tiny model, in one process or under torchrun (FSDP2); used by test_dist.py.

    python tests/fsdp_steps.py OUT_DIR                                   # one process, whole batch
    torchrun --standalone --nproc_per_node 2 tests/fsdp_steps.py OUT_DIR  # each rank half the batch
Writes OUT_DIR/losses.json and a Hugging Face checkpoint OUT_DIR/ckpt (gathered on rank 0).
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dist  # noqa: E402
import model as M  # noqa: E402

out_dir = sys.argv[1]
rank, world, device = dist.init()
torch.manual_seed(0)
net, tok = M.load("tiny")
net = dist.shard(net, param_dtype=None)  # fp32 compute so that one process and two agree to rounding
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
dist.cleanup()
