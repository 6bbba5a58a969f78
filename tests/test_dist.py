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
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_helpers_are_noops_without_torchrun():
    assert dist.init()[:2] == (0, 1)
    net = torch.nn.Linear(2, 2)
    assert dist.shard(net) is net
    assert dist.mean({"a": 1.5}) == {"a": 1.5}
    assert set(dist.full_state_dict(net)) == {"weight", "bias"}


def test_fsdp_two_ranks_match_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run([sys.executable, os.path.join(HERE, "fsdp_steps.py"), str(one)], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         os.path.join(HERE, "fsdp_steps.py"), str(two)], tmp_path)
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
    bad = [(p.prog, a.option_strings) for p in parsers for a in p._actions
           if a.option_strings and "--help" not in a.option_strings
           and all(any(t.startswith(s) for t in theirs) for s in a.option_strings)]
    assert not bad, f"flags torchrun would take for its own: {bad}"
    assert any(a.option_strings == ["--n", "--n-samples"] for p in parsers for a in p._actions)  # the test can fail
