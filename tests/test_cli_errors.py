"""Bad command-line input is refused before any work, by every CLI (issue 15): one line `error: --flag: ...` on
stderr, exit status 2, no traceback, no model loaded, within seconds. Also: a resume with changed arguments is
refused (and accepted, recorded, with --allow-changed-args). distill.py's resume and its checks before an existing
--out is touched are tested in test_distill.py.

The table runs each script's main() in this process (a subprocess per row would cost ~2 s of imports each);
`test_scripts_refuse_bad_input_as_processes` runs one row per script as a real process, in parallel."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import data
import dist
import distill
import eval as E
import model as M
import ppo
import reward
import sample
import sft
import verify

ROOT = Path(__file__).resolve().parent.parent
MAIN = {"sample.py": sample.main, "sft.py": sft.main, "ppo.py": ppo.main, "eval.py": E.main, "data.py": data.main,
        "reward.py": reward.main, "verify.py": verify.main, "distill.py": distill.main}


@pytest.fixture
def files(tmp_path):
    """Input files in tmp_path: good prompts, an empty file, a non-UTF-8 file (line 2), 3 prompts, an SFT set,
    prompts whose line 2 has no answer, web rows whose line 2 has a number for a question; and `blocked`, a path
    below a plain file (its folder cannot be created)."""
    rows = [{"problem": f"{i}+1", "answer": str(i + 1)} for i in range(3)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"problem": "1+1", "answer": "2"}\n{"problem": "caf\xe9", "answer": "2"}\n')
    (tmp_path / "sft.jsonl").write_text(json.dumps({"prompt": "1+1=", "response": "2"}) + "\n")
    (tmp_path / "file").write_text("x")
    (tmp_path / "noanswer.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    (tmp_path / "web_int.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": 7, "answer": "a"}\n')
    return {"noanswer": str(tmp_path / "noanswer.jsonl"), "web_int": str(tmp_path / "web_int.jsonl"),
            "p": str(tmp_path / "p.jsonl"), "empty": str(tmp_path / "empty.jsonl"), "tmp": str(tmp_path),
            "latin1": str(tmp_path / "latin1.jsonl"), "sft": str(tmp_path / "sft.jsonl"),
            "blocked": str(tmp_path / "file" / "sub"), "missing": str(tmp_path / "missing.jsonl")}


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model (weights) loads; the meta-device load (structure and tokenizer) is allowed."""
    real = M.load

    def load(name, *a, **k):
        assert k.get("device") == "meta", f"a model loaded ({name}) before the bad input was refused"
        return real(name, *a, **k)
    monkeypatch.setattr(M, "load", load)
    monkeypatch.setattr(dist, "load_sharded", lambda *a, **k: pytest.fail("a model loaded"))


# (script, argv with {placeholders} from `files`, the flag the message names, a phrase of the message)
CASES = [
    ("sample.py", "--prompts {p} --n 0", "--n", "got 0, expected an integer >= 1"),
    ("sample.py", "--prompts {p} --max-new-tokens 0", "--max-new-tokens", "got 0"),
    ("sample.py", "--prompts {p} --max-new-tokens -1", "--max-new-tokens", "got -1"),
    ("sample.py", "--prompts {p} --temperature -0.5", "--temperature", ">= 0"),
    ("sample.py", "--prompts {p} --top-p 0", "--top-p", "(0, 1]"),
    ("sample.py", "--prompts {p} --batch-size -1", "--kv-slots", "got -1"),
    ("sample.py", "--prompts {missing}", "--prompts", "missing.jsonl: prompt file not found"),
    ("sample.py", "--prompts {empty}", "--prompts", "no prompts"),
    ("sample.py", "--prompts {latin1}", "--prompts", "latin1.jsonl:2: not UTF-8"),
    ("sample.py", "--prompts {p} --out {blocked}/s.jsonl", "--out", "can be written"),
    ("sft.py", "--max-steps -1 --out {tmp}/r", "--max-steps", "got -1"),
    ("sft.py", "--epochs 0 --out {tmp}/r", "--epochs", "got 0.0, expected a number > 0"),
    ("sft.py", "--batch-size 0 --out {tmp}/r", "--batch-size", "got 0"),
    ("sft.py", "--digits 4 --max-digits 3 --out {tmp}/r", "--max-digits", "got 3, expected 0 (no mix)"),
    ("sft.py", "--batch-size 6 --micro-batch-size 4 --out {tmp}/r", "--batch-size", "multiple of --micro-batch-size"),
    ("sft.py", "--data {missing} --out {tmp}/r", "--data", "missing.jsonl: file not found"),
    ("sft.py", "--data {sft} --out {tmp}/r", "--data", "at least one batch"),
    ("sft.py", "--eval-top-p 1.5 --out {tmp}/r", "--eval-top-p", "(0, 1]"),
    ("sft.py", "--out {blocked}", "--out", "can be created and written"),
    ("sft.py", "--rope-theta -1 --out {tmp}/r", "--rope-theta", "got -1.0"),
    ("ppo.py", "--temperature 0 --out {tmp}/r", "--temperature", "got 0.0, expected a number > 0"),
    ("ppo.py", "--iterations 0 --out {tmp}/r", "--iterations", "got 0"),
    ("ppo.py", "--n-samples 0 --out {tmp}/r", "--n-samples", "got 0"),
    ("ppo.py", "--train-batch 0 --out {tmp}/r", "--train-batch", "got 0"),
    ("ppo.py", "--max-new-tokens -1 --out {tmp}/r", "--max-new-tokens", "got -1"),
    ("ppo.py", "--top-p 1.5 --out {tmp}/r", "--top-p", "(0, 1]"),
    ("ppo.py", "--lam 1.5 --out {tmp}/r", "--lam", "[0, 1]"),
    ("ppo.py", "--gamma -0.1 --out {tmp}/r", "--gamma", "[0, 1]"),
    ("ppo.py", "--lam 0.9 --out {tmp}/r", "--lam", "when --rep-penalty is on"),
    ("ppo.py", "--eval-every 0 --out {tmp}/r", "--eval-every", "got 0"),
    ("ppo.py", "--cosine 1,2,3 --out {tmp}/r", "--cosine", "five comma-separated numbers"),
    ("ppo.py", "--prompts {missing} --out {tmp}/r", "--prompts", "missing.jsonl: file not found"),
    ("ppo.py", "--prompts {empty} --out {tmp}/r", "--prompts", "non-empty"),
    ("ppo.py", "--prompts {latin1} --out {tmp}/r", "--prompts", "latin1.jsonl:2: not UTF-8"),
    ("ppo.py", "--prompts {p} --rollout-batch 4 --out {tmp}/r", "--prompts", "3 prompts"),
    ("ppo.py", "--prompts {p} --rollout-batch 2 --max-prompt-len 3 --eval-data {p} --out {tmp}/r",
     "--max-prompt-len", "(0 fit)"),
    ("ppo.py", "--out {blocked}", "--out", "can be created and written"),
    ("ppo.py", "--verifier judge --out {tmp}/r", "--judge-model", "expected a judge model"),
    ("ppo.py", "--verifier judge --judge-model {missing} --out {tmp}/r", "--judge-model", "neither a directory"),
    ("ppo.py", "--verifier judge --judge-model tiny --judge-max-new-tokens 0 --out {tmp}/r", "--judge-max-new-tokens",
     "got 0"),
    ("ppo.py", "--rope-theta -1 --out {tmp}/r", "--rope-theta", "got -1.0"),
    ("ppo.py", "--preset 4.3 --lam 0.9 --out {tmp}/r", "--lam", "when --rep-penalty is on"),
    ("eval.py", "--n -1", "--n", "got -1"),
    ("eval.py", "--benchmarks classroom --rope-theta -1", "--rope-theta", "got -1.0"),
    ("eval.py", "--benchmarks classroom --temperature -1", "--temperature", ">= 0"),
    ("eval.py", "--benchmarks nope", "--benchmarks", "got nope"),
    ("eval.py", "--benchmarks classroom --digits 0", "--digits", "1..18"),
    ("eval.py", "--benchmarks classroom --max-digits 2", "--max-digits", "--digits (3)..18"),
    ("eval.py", "--benchmarks classroom --out {blocked}", "--out", "can be created and written"),
    ("eval.py", "--plot {tmp}", "--plot", "metrics.jsonl"),
    ("distill.py", "reject --teacher tiny --prompts {p} --n 0 --out {tmp}/d.jsonl", "--n-samples", "got 0"),
    ("distill.py", "reject --teacher tiny --prompts {latin1} --out {tmp}/d.jsonl", "--prompts",
     "latin1.jsonl:2: not UTF-8"),
    ("distill.py", "reject --teacher tiny --prompts {p} --top-p 0 --out {tmp}/d.jsonl", "--top-p", "(0, 1]"),
    ("distill.py", "reject --teacher tiny --prompts {empty} --out {tmp}/d.jsonl", "--prompts", "non-empty"),
    ("distill.py", "reject --teacher tiny --prompts {noanswer} --out {tmp}/d.jsonl", "--prompts",
     "noanswer.jsonl:2: missing required key 'answer'"),
    ("distill.py", "construct --model tiny --prompts {noanswer} --out {tmp}/d.jsonl", "--prompts",
     "noanswer.jsonl:2: missing required key 'answer'"),
    ("distill.py", "construct --model tiny --prompts {latin1} --out {tmp}/d.jsonl", "--prompts", "latin1.jsonl:2"),
    ("distill.py", "construct --model tiny --prompts {empty} --out {tmp}/d.jsonl", "--prompts",
     "a non-empty problem set"),
    ("distill.py", "construct --model tiny --prompts {p} --max-actions 1 --out {tmp}/d.jsonl", "--max-actions",
     "got 1"),
    ("distill.py", "construct --model tiny --prompts {p} --action-tokens 0 --out {tmp}/d.jsonl", "--action-tokens",
     "got 0"),
    ("distill.py", "extract --model tiny --data {p} --out {tmp}/d.jsonl", "--data",
     "p.jsonl:1: missing required key 'solution'"),
    ("distill.py", "extract --model tiny --data {latin1} --solution-key answer --out {tmp}/d.jsonl", "--data",
     "latin1.jsonl:2: not UTF-8"),
    ("distill.py", "extract --model tiny --data {empty} --out {tmp}/d.jsonl", "--data", "a non-empty file"),
    ("distill.py", "extract --model tiny --data {web_int} --question-key question --solution-key answer "
     "--out {tmp}/d.jsonl", "--data", "web_int.jsonl:2: key 'question' should be str, got int"),
    ("distill.py", "filter --teacher tiny --prompts {missing} --out {tmp}/d.jsonl", "--prompts",
     "missing.jsonl: file not found"),
    ("distill.py", "filter --teacher tiny --prompts {noanswer} --out {tmp}/d.jsonl", "--prompts", "noanswer.jsonl:2"),
    ("distill.py", "filter --teacher tiny --prompts {p} --out {p}", "--out", "a file other than the input"),
    ("distill.py", "filter --teacher tiny --prompts {p} --out {tmp}/d.jsonl --sft-out {blocked}/s.jsonl",
     "--sft-out", "can be written"),
    ("data.py", "classroom --n 0 --out {tmp}/c.jsonl", "--n", "got 0"),
    ("data.py", "classroom --ops div --out {tmp}/c.jsonl", "--ops", "got div"),
    ("data.py", "classroom --digits 4 --max-digits 2 --out {tmp}/c.jsonl", "--max-digits", "--digits (4)..18"),
    ("data.py", "download nope --dest {tmp}", "names", "got nope"),
    ("reward.py", "--max_len 0", "--max_len", "got 0"),
    ("reward.py", "--plot --out {blocked}/c.png", "--out", "can be written"),
    ("verify.py", "--kind zzz", "--kind", "got 'zzz'"),
]


@pytest.mark.parametrize("script, argv, flag, phrase", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_bad_input_is_refused_up_front(script, argv, flag, phrase, files, no_model, capsys, monkeypatch):
    monkeypatch.chdir(files["tmp"])
    t0 = time.time()
    with pytest.raises(SystemExit) as e:
        MAIN[script](argv.format(**files).split())
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}: ") and phrase in lines[0], err
    assert time.time() - t0 < 10


def test_scripts_refuse_bad_input_as_processes(tmp_path):
    """The scripts' `__main__` paths as real processes (all at once; the other scripts share ppo.py's): exit 2, one
    line, no traceback, nothing written."""
    runs = [("--prompts", ["ppo.py", "--prompts", "missing.jsonl"]),
            ("--n-samples", ["distill.py", "reject", "--teacher", "tiny", "--n", "0"]),
            ("--rows", ["reward.py", "--rows", "0"]), ("--kind", ["verify.py", "--kind", "nope"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, str(ROOT / r[0])] + r[1:], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _, r in runs]
    errs = []
    for (flag, r), p in zip(runs, procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2 and "Traceback" not in out + err, (r, out, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {flag}: "), (r, err)
        errs.append(err)
    assert "missing.jsonl: file not found" in errs[0]  # not "unknown benchmark"
    assert time.time() - t0 < 60  # 4 processes importing torch at once on a shared 2-core machine
    assert os.listdir(tmp_path) == []  # nothing written: no run folder, no output


# ---- resuming with other arguments ----------------------------------------------------------------------------
class Loaded(Exception):
    """Raised by the patched model loader: the run got past every check."""


def test_sft_resume_with_changed_arguments_is_refused_then_recorded(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "args.json").write_text(json.dumps(vars(sft.parse_args(["--out", str(out), "--kill-at-step", "3"]))))
    monkeypatch.setattr(M, "load", lambda *a, **k: (_ for _ in ()).throw(Loaded()))
    with pytest.raises(Loaded):  # the same arguments but the test hook and checkpoint bookkeeping: resumes
        sft.main(["--out", str(out), "--keep-checkpoints", "2", "--save-every", "7"])
    with pytest.raises(SystemExit) as e:
        sft.main(["--out", str(out), "--lr", "0.001", "--seed", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: --out: ")
    assert "--lr: 0.003 -> 0.001" in err and "--seed: 0 -> 1" in err and "--allow-changed-args" in err
    assert "args_changes" not in json.loads((out / "args.json").read_text())  # untouched
    with pytest.raises(Loaded):
        sft.main(["--out", str(out), "--lr", "0.001", "--seed", "1", "--allow-changed-args"])
    saved = json.loads((out / "args.json").read_text())
    assert saved["lr"] == 0.001 and saved["args_changes"] == [{"lr": {"saved": 0.003, "new": 0.001},
                                                               "seed": {"saved": 0, "new": 1}}]
    with pytest.raises(Loaded):  # the new arguments are now the run's: no flag needed, history kept
        sft.main(["--out", str(out), "--lr", "0.001", "--seed", "1"])
    assert len(json.loads((out / "args.json").read_text())["args_changes"]) == 1


def test_ppo_resume_with_changed_arguments_is_refused(tmp_path, monkeypatch, capsys):
    sft_out = tmp_path / "sft"  # a finished classroom SFT run, as ensure_start expects
    (sft_out / "checkpoint-1").mkdir(parents=True)
    (sft_out / "checkpoint-1" / "complete.json").write_text("{}")
    (sft_out / "done.json").write_text("{}")
    out = tmp_path / "ppo"
    flags = ["--sft-out", str(sft_out), "--out", str(out)]
    out.mkdir()
    (out / "args.json").write_text(json.dumps({**vars(ppo.parse_args(flags)), "start": "x"}))
    monkeypatch.setattr(dist, "load_sharded", lambda *a, **k: (_ for _ in ()).throw(Loaded()))
    with pytest.raises(Loaded):  # memory knobs and test hooks may change
        ppo.main(flags + ["--micro-batch", "8", "--kv-slots", "4", "--kill-at-step", "2", "--grad-ckpt"])
    with pytest.raises(SystemExit) as e:
        ppo.main(flags + ["--iterations", "40", "--kl-coef", "0.05"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--iterations: 20 -> 40" in err and "--kl-coef: 0.01 -> 0.05" in err
    with pytest.raises(Loaded):
        ppo.main(flags + ["--iterations", "40", "--kl-coef", "0.05", "--allow-changed-args"])
    saved = json.loads((out / "args.json").read_text())
    assert saved["iterations"] == 40 and saved["start"] == str(sft_out / "checkpoint-1")
    assert saved["args_changes"] == [{"iterations": {"saved": 20, "new": 40}, "kl_coef": {"saved": 0.01, "new": 0.05}}]


# ---- tests that need ../shared/data -----------------------------------------------------------------------------
def test_missing_data_skips_fail_when_the_data_is_required(tmp_path):
    """conftest.py: a skip whose reason says "../shared/data not found" is a failure under LONGCOT_REQUIRE_DATA=1
    (set by .ci/run when the folder exists); other skips stay skips."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_x.py").write_text("import pytest\n"
                                        "def test_data():\n    pytest.skip('../shared/data not found: x.jsonl')\n"
                                        "def test_other():\n    pytest.skip('no GPU')\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_x.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, LONGCOT_REQUIRE_DATA="1"))
    assert "1 failed, 1 skipped" in r.stdout.splitlines()[-1], r.stdout
    assert "LONGCOT_REQUIRE_DATA=1 but the test skipped" in r.stdout and "not found: x.jsonl" in r.stdout, r.stdout
