"""The repository root is on sys.path for every script a user runs from it, so each of its top-level names
replaces an installed package of the same name for everything imported from there. transformers >= 5.2x imports
the PyPI package `kernels` at `import transformers.activations`, and a folder `kernels/` in the root (the Triton
package's old name) broke every transformers model class on a fresh machine.

These tests guard the whole class: no top-level module or package of the repo may share its import name with
an installed distribution, and a script started in the repo root builds and runs a transformers model."""
import importlib.metadata
import os
import re
import subprocess
import sys

from scripts import ROOT


def top_level_names(root=ROOT):
    """Import names the repo root provides: *.py modules and folders with __init__.py (regular packages, which
    win over an installed package of the same name). A folder without __init__.py is only a namespace portion:
    a regular package later on sys.path still wins over it, so it shadows nothing."""
    names = set()
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if entry.endswith(".py") and os.path.isfile(path):
            names.add(entry[:-3])
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            names.add(entry)
    return names


def test_top_level_names_found():
    """The scan sees what a reader sees in the root (else the guard below would check nothing)."""
    names = top_level_names()
    assert {"model", "sample", "ppo", "sft", "longcot_kernels"} <= names
    assert "tests" not in names  # no __init__.py: shadows nothing


def test_no_top_level_name_shadows_an_installed_distribution():
    provided = importlib.metadata.packages_distributions()  # import name -> distributions that install it
    clashes = {n: provided[n] for n in sorted(top_level_names()) if provided.get(n)}
    assert not clashes, (f"these top-level names of the repo are also installed by a distribution, which the repo's "
                         f"file would replace for every import from the repo root: {clashes}")


def test_guard_sees_a_clash(tmp_path):
    """The guard's own check: a root holding a folder named like an installed package is caught."""
    provided = importlib.metadata.packages_distributions()
    taken = next(n for n in ("torch", "transformers", "safetensors", "tokenizers") if n in provided)
    (tmp_path / taken).mkdir()
    (tmp_path / taken / "__init__.py").write_text("")
    (tmp_path / "mine.py").write_text("")
    names = top_level_names(str(tmp_path))
    assert names == {taken, "mine"} and provided.get(taken)


def test_transformers_model_builds_from_the_repo_root():
    """A user's script in the repo root (its folder first on sys.path) builds a transformers Qwen2 model and runs
    a forward. Failed with `ImportError: cannot import name 'CUDAProperties' from 'kernels'` when the Triton
    package was called kernels/ and transformers >= 5.2x with the `kernels` distribution was installed."""
    code = ("import torch, transformers\n"
            "cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,"
            " num_attention_heads=2, num_key_value_heads=1)\n"
            "m = transformers.Qwen2ForCausalLM(cfg).eval()\n"
            "out = m(torch.tensor([[1, 2, 3]]))\n"
            "assert out.logits.shape == (1, 3, 64)\n"
            "import transformers.activations\n"
            "print('ok', transformers.__version__)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout[-2000:] + r.stderr[-3000:]


def test_requirements_pin_every_direct_dependency():
    """requirements.txt pins exact versions (==) of the direct dependencies, so a fresh machine installs what CI
    tested; a range would let a new release in untested (as transformers>=5.0 let in 5.25 and its `kernels`)."""
    lines = [ln.split("#")[0].strip() for ln in open(os.path.join(ROOT, "requirements.txt"))]
    reqs = {}
    for ln in filter(None, lines):
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*==\s*([0-9][0-9A-Za-z.+]*)\s*(;.*)?$", ln)
        assert m, f"requirements.txt: {ln!r} is not an exact pin (name==version)"
        reqs[m.group(1).lower()] = m.group(2)
    assert set(reqs) == {"torch", "transformers", "tokenizers", "safetensors", "triton", "sympy", "tqdm", "pytest",
                         "matplotlib"}, sorted(reqs)
