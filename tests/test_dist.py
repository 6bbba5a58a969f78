"""The distributed layer: FSDP2 under torchrun on CPU (gloo) equals one process."""
import json
import os
import subprocess
import sys

import pytest
import torch

import dist
import model as M

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    # FSDP2's view-tensor warning fills the tail; keep the other lines, to see where a rank failed
    err = "\n".join(line for line in r.stderr.splitlines() if "view tensor" not in line and
                     "_register_pre_backward_hook" not in line)
    assert r.returncode == 0, r.stdout[-3000:] + err[-6000:]
    return r


def test_helpers_are_noops_without_torchrun():
    assert dist.init()[:2] == (0, 1)
    net = torch.nn.Linear(2, 2)
    assert dist.shard(net) is net
    assert dist.mean({"a": 1.5}) == {"a": 1.5}
    assert set(dist.full_state_dict(net)) == {"weight", "bias"}


@pytest.mark.parametrize("hooks", ["current", "torch211"])
def test_fsdp_two_ranks_match_one_process(tmp_path, hooks):
    """3 AdamW steps under FSDP2 with 2 ranks equal one process. "torch211": FSDP2's pre-backward hooks placed as
    torch <= 2.12 placed them (only on tensors that pytree finds in a module's output); before model.Output was a
    pytree node and the root kept its weights after forward, the first backward read freed storage there."""
    one, two, start = tmp_path / "one", tmp_path / "two", str(tmp_path / "start")
    one.mkdir(), two.mkdir()
    M.save(*M.load("tiny"), start)
    run([sys.executable, os.path.join(HERE, "fsdp_steps.py"), str(one), start], tmp_path)
    r = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             os.path.join(HERE, "fsdp_steps.py"), str(two), start] + (["--torch211-hooks"] if hooks == "torch211" else []),
            tmp_path)
    # dist.cleanup ended each rank (status 0, so the script's exit(3) after it never ran) and flushed its output
    assert "fsdp_steps: rank 0 done" in r.stdout and "fsdp_steps: rank 1 done" in r.stdout
    l1 = json.loads((one / "losses.json").read_text())
    l2 = json.loads((two / "losses.json").read_text())
    assert len(l1) == 3 and l1[2] < l1[0]
    assert l1 == pytest.approx(l2, abs=1e-5)
    m1, _ = M.load(str(one / "ckpt"))
    m2, _ = M.load(str(two / "ckpt"))  # the gathered FSDP state dict saved and reloads
    start, _ = M.load("tiny")
    for (k, a), b, s in zip(m1.state_dict().items(), m2.state_dict().values(), start.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k
        assert not torch.equal(a, s) or k.endswith("bias") or "norm" in k, k  # the steps did change weights


def test_every_script_flag_has_a_spelling_torchrun_passes_on(monkeypatch):
    """torchrun's own argparse reads options anywhere on the line, abbreviations included: `torchrun eval.py --n 2`
    fails with "ambiguous option: --n could match --nnodes, --nproc-per-node, ...". Every flag of the scripts that
    run under torchrun must have at least one spelling that is not a prefix of a torchrun option."""
    import argparse

    from torch.distributed.run import get_args_parser
    import distill
    import eval as E
    import ppo
    import sample
    import sft
    theirs = [s for a in get_args_parser()._actions for s in a.option_strings]
    parsers = []

    def grab(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    for parse in (sft.parse_args, ppo.parse_args, E.parse_args, sample.main):
        with pytest.raises(SystemExit):
            parse([])
    assert len(parsers) == 4
    subs = [a for a in distill.build_parser()._actions if isinstance(a, argparse._SubParsersAction)][0]
    parsers += list(subs.choices.values())  # distill.py's sub-commands: reject, construct, extract, filter
    assert len(parsers) == 8
    bad = [(p.prog, a.option_strings) for p in parsers for a in p._actions
           if a.option_strings and "--help" not in a.option_strings
           and all(any(t.startswith(s) for t in theirs) for s in a.option_strings)]
    assert not bad, f"flags torchrun would take for its own: {bad}"
    assert sum(a.option_strings == ["--n", "--n-samples"] for p in parsers for a in p._actions) == 5  # it can fail


def test_decode_copy_is_built_in_bf16_strictly_one_parameter_at_a_time(monkeypatch):
    """The sampler's copy: built in the target dtype from the start (never a full fp32 model first), filled one
    parameter at a time (no full state dict), and strict (a weight it cannot fill is an error, not garbage)."""
    from sample import decode_copy
    policy, _ = M.load("tiny", value_head=True)  # the value head is not part of the copy
    monkeypatch.setattr(dist, "full_state_dict", lambda *a, **k: pytest.fail("gathered a full state dict"))
    built = []
    real_init = M.CausalLM.__init__

    def spy(self, cfg, value_head=False):
        real_init(self, cfg, value_head)
        built.append(next(self.parameters()).device.type)
    monkeypatch.setattr(M.CausalLM, "__init__", spy)
    copy = decode_copy(policy, dtype=torch.bfloat16)
    assert built == ["meta"]  # no real fp32 model was made on the way
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters()) and copy.value_head is None
    for k, v in copy.state_dict().items():
        assert torch.equal(v, policy.state_dict()[k].to(torch.bfloat16)), k
    with torch.no_grad():  # refresh in place after an update
        policy.model.norm.weight.add_(1.0)
    again = decode_copy(policy, copy, dtype=torch.bfloat16)
    assert again is copy and torch.equal(copy.model.norm.weight, policy.model.norm.weight.to(torch.bfloat16))
    other = M.CausalLM(M.Config(num_layers=3))  # one block fewer than the copy expects
    with pytest.raises(ValueError, match="missing"):
        decode_copy(other, copy)


def test_process_group_gets_the_long_timeout(monkeypatch):
    """NCCL's default 10-minute watchdog would kill ranks waiting for a long generation or a checkpoint write:
    dist.init passes its timeout (sft.py / ppo.py --dist-timeout, minutes) to init_process_group."""
    from datetime import timedelta

    import ppo
    import sft
    seen = {}
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(dist.td, "is_initialized", lambda: False)
    monkeypatch.setattr(dist.td, "init_process_group", lambda backend, **kw: seen.update(kw))
    monkeypatch.setattr(dist.td, "get_rank", lambda: 0)
    monkeypatch.setattr(dist.td, "get_world_size", lambda: 1)
    dist.init(7)
    assert seen["timeout"] == timedelta(minutes=7)
    dist.init()
    assert seen["timeout"] == timedelta(minutes=120)
    assert sft.parse_args(["--dist-timeout", "30"]).dist_timeout == 30 and ppo.parse_args([]).dist_timeout == 120
