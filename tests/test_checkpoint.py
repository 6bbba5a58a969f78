"""Checkpoints (dist.py): a crash at each point of a save, then a resume, loses nothing and logs no step twice; the
metrics log drops a torn last line and the rows of steps that run again; readers name file and line of a bad line.

The crash tests run a small training loop in the shape of sft.py's in this process (a simulated crash raises at
the point instead of SIGKILL: every write before a point is closed and fsync'd, so the disk holds what a kill
would leave). tests/test_sft.py kills real sft.py runs (one process and two ranks) inside a save.
"""
import json
import os
import random

import pytest
import torch

import dist
import eval as E
import model as M


class Crash(Exception):
    pass


def train(out, total, save_every=2):
    """sft.py's loop in miniature: resume, trim the log, then steps (data drawn from the global RNGs, so a resume
    that did not restore them would differ), a logged row per step, a checkpoint every `save_every` steps."""
    torch.manual_seed(0)
    random.seed(0)
    net, tok = M.load("tiny", seed=0)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    path, state = dist.load_checkpoint(str(out), {"model": net}, {"model": opt})
    step = state["step"] if path else 0
    if path:
        print(f"resumed from {path} at step {step}")
    log = dist.metrics_log(str(out), "step", step if path else None)
    while step < total:
        x = torch.randint(3, 60, (2, 12))
        loss = -net(x[:, :-1], labels=x[:, 1:]).logprobs.mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        step += 1
        log({"step": step, "loss": loss.item(), "r": random.random()})
        if step % save_every == 0:
            dist.save_checkpoint(str(out), step, {"model": net}, {"model": opt}, tok, {"step": step})
    return net, opt


def rows(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Six uninterrupted steps (checkpoints at 2, 4, 6)."""
    out = tmp_path_factory.mktemp("ref")
    net, opt = train(out, 6)
    return rows(out), net.state_dict(), opt.state_dict()


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_save_layout_and_roundtrip(reference, tmp_path):
    _, ref_w, ref_opt = reference
    net, opt = train(tmp_path, 4)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4", "latest", "metrics.jsonl"]  # checkpoint-2 deleted
    assert (tmp_path / "latest").read_text() == "checkpoint-4\n"
    ck = tmp_path / "checkpoint-4"
    assert {"config.json", "model.safetensors", "trainer", "rng-0.pt", "state.json", "complete.json"} <= set(os.listdir(ck))
    assert json.loads((ck / "state.json").read_text()) == {"step": 4, "world": 1, "state": {"step": 4}}
    hf, _ = M.load(str(ck))  # the Hugging Face weights load as a model: equal to the trained ones
    for k, v in net.state_dict().items():
        assert torch.equal(hf.state_dict()[k], v), k
    net2, _ = M.load("tiny", seed=7)  # other weights: the load must overwrite every one of them
    opt2 = torch.optim.AdamW(net2.parameters(), lr=3e-3)
    torch.manual_seed(123)
    path, state = dist.load_checkpoint(str(tmp_path), {"model": net2}, {"model": opt2})
    assert path == str(ck) and state == {"step": 4}
    for k, v in net.state_dict().items():
        assert torch.equal(net2.state_dict()[k], v), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for p in s1["state"]:
        for k in s1["state"][p]:
            assert torch.equal(s1["state"][p][k], s2["state"][p][k]), (p, k)
    assert dist.load_checkpoint(str(tmp_path / "none"), {"model": net2}, {"model": opt2}) == (None, None)


@pytest.mark.parametrize("point", dist.CRASH_POINTS)
def test_crash_at_each_point_of_a_save_then_resume_loses_nothing(point, reference, tmp_path, monkeypatch, capsys):
    """Checkpoint 2 is complete; the save of checkpoint 4 stops right after `point`. The next start resumes from
    4 if its marker was written, else from 2; it ends with the same rows (each step once) and the same weights
    and optimizer states as the uninterrupted run, and only checkpoint-6 left on disk."""
    ref_rows, ref_w, ref_opt = reference

    def crash(p):
        raise Crash(p)
    monkeypatch.setattr(dist, "_crash", crash)
    monkeypatch.setenv("LONGCOT_CRASH_AT", f"{point}:4")
    with pytest.raises(Crash):
        train(tmp_path, 6)
    monkeypatch.delenv("LONGCOT_CRASH_AT")
    resumed = 4 if dist.CRASH_POINTS.index(point) >= dist.CRASH_POINTS.index("marker") else 2
    assert dist.latest_checkpoint(str(tmp_path)) == str(tmp_path / f"checkpoint-{resumed}")
    capsys.readouterr()
    net, opt = train(tmp_path, 6)
    printed = capsys.readouterr().out
    assert f"resumed from {tmp_path / f'checkpoint-{resumed}'} at step {resumed}" in printed
    if resumed == 2:
        assert "dropped 2 rows logged after the checkpoint at step 2" in printed
    assert rows(tmp_path) == ref_rows  # steps 1..6 once each, the same losses and random draws
    for k, v in ref_w.items():
        assert torch.equal(net.state_dict()[k], v), k
    for p, st in ref_opt["state"].items():
        for k, v in st.items():
            assert torch.equal(opt.state_dict()["state"][p][k], v), (p, k)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-6", "latest", "metrics.jsonl"]


def test_pointer_missing_torn_or_behind(tmp_path, capsys):
    """The newest complete folder wins; a folder without its marker is ignored whatever its number."""
    for n in (2, 4, 9):
        (tmp_path / f"checkpoint-{n}").mkdir()
    for n in (2, 4):
        (tmp_path / f"checkpoint-{n}" / "complete.json").write_text("{}")
    (tmp_path / "checkpoint-7.trash").mkdir()
    (tmp_path / "checkpoint-7.trash" / "complete.json").write_text("{}")
    assert dist.latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")  # no pointer
    (tmp_path / "latest").write_text("checkpoi")  # torn
    assert dist.latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    (tmp_path / "latest").write_text("checkpoint-2\n")  # behind: the run stopped between marker and pointer
    assert dist.latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert "newest complete checkpoint" in capsys.readouterr().out
    (tmp_path / "latest").write_text("checkpoint-4\n")
    assert dist.latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert capsys.readouterr().out == ""
    assert dist.latest_checkpoint(str(tmp_path / "missing")) is None


def test_a_checkpoint_of_the_old_layout_is_refused_not_ignored(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "trainer_state.pt").write_bytes(b"")
    net, _ = M.load("tiny")
    with pytest.raises(ValueError, match="older longcot"):
        dist.load_checkpoint(str(tmp_path), {"model": net}, {})


# ----------------------------------------------------------------------------------------------------
# The metrics log
# ----------------------------------------------------------------------------------------------------
def test_resume_drops_a_torn_last_line_and_rows_after_the_checkpoint(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    good = [{"iteration": 0, "eval/accuracy": 0.5}, {"iteration": 1, "reward": 1.0}, {"iteration": 2, "reward": 2.0},
            {"iteration": 2, "eval/accuracy": 0.6}, {"iteration": 3, "reward": 3.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"iteration": 4, "rew')
    log = dist.metrics_log(str(tmp_path), "iteration", 2)
    out = capsys.readouterr().out
    assert "dropped a torn last line" in out and "dropped 1 row logged after the checkpoint at iteration 2" in out
    log({"iteration": 3, "reward": 3.5})
    assert rows(tmp_path) == good[:4] + [{"iteration": 3, "reward": 3.5}]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()
    dist.metrics_log(str(tmp_path), "iteration", None)  # no checkpoint: the run starts again, so do its rows
    assert "dropped 5 rows logged after the start of a run that saved no checkpoint" in capsys.readouterr().out
    assert path.read_text() == ""
    dist.metrics_log(str(tmp_path), "iteration", 7)  # nothing to drop: nothing said, nothing rewritten
    assert capsys.readouterr().out == ""


def test_a_bad_line_before_the_last_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{oops\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: invalid JSON"):
        dist.metrics_log(str(tmp_path), "step", 2)
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: invalid JSON"):
        E.read_curves(str(tmp_path))
    assert path.read_text() == '{"step": 1}\n{oops\n{"step": 2}\n'  # left as it was


def test_read_curves_ignores_a_torn_last_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"iteration": 1, "accuracy": 0.5, "response_length": 10}) + "\n"
        + json.dumps({"iteration": 1, "eval/accuracy": 0.4, "eval/mean_length": 9}) + '\n{"iteration": 2, "acc')
    train, held = E.read_curves(str(tmp_path))
    assert train == [(1, 0.5, 10)] and held == [(1, 0.4, 9)]
    assert "torn last line" in capsys.readouterr().err


def test_atomic_open_replaces_a_file_whole_and_writes_through_links_and_devices(tmp_path):
    """A regular file is replaced all at once (an error inside the block leaves the old text); a symlink (what
    /dev/stdout is) or a device keeps what it is: the text goes through it, no plain file takes its place."""
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with dist.atomic_open(path) as f:
            f.write("half")
            raise RuntimeError
    assert path.read_text() == "old\n" and not (tmp_path / "out.jsonl.tmp").exists()
    dist.write_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    link = tmp_path / "stdout"
    link.symlink_to(path)  # like /dev/stdout -> /proc/self/fd/1
    dist.write_atomic(link, "through\n")
    assert link.is_symlink() and path.read_text() == "through\n"
    null = tmp_path / "null"
    null.symlink_to(os.devnull)
    dist.write_atomic(null, "gone\n")
    assert null.is_symlink() and not os.path.isfile(os.devnull)
