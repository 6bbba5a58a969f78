"""The miniature replication: the paper's findings, tested on the tiny model and a CPU, measured over seeds.

    python replicate.py                 # everything, 3 seeds (<= 60 minutes on 2 CPU cores): plots, results.json,
                                        # and the README table between its markers
    python replicate.py --quick         # one seed, shorter runs (<= 10 minutes): meant to show the direction of
                                        # each finding (half the SFT tokens, 4 PPO iterations: see "Quick")
    python replicate.py --workers 1     # one run at a time (default: one single-threaded run per core, 2 at once)

Runs go to runs/replicate/ (--quick: runs/replicate-quick/), one folder per stage (sft-long-s1, ppo-long-cosine-rep-s1,
...). A stage that finished (its analysis.json) is reused; a stage that was interrupted resumes from its last
checkpoint (sft.py and ppo.py resume on the same --out), so running the command again continues where it stopped.
Each stage is `python sft.py ...` or `python ppo.py ...` with the flags below, then one evaluation of its final
model (analysis.json; an SFT stage also evaluates PPO's start when that is an earlier checkpoint). The table and
plots are made from those files only.

Design (fourth version, committed 2026-11-30 12:22 before its reported runs on seeds 21-23; developed on seeds
100, 1 and 2, which are not reported)
-----------------------------------------------------------------------------------------------------------------
History. Version 1 (3-digit addition, 4 epochs over 2,240 problems, batch 8, 1,120 steps for both CoT types,
seeds 1-3; its table is in the git history of README.md) ended SFT in the middle of the model's learning
transition: the seeds split into "learnt" and "not learnt" (short CoT 0.94 / 0.01 / 0.935), some PPO start sat
at the floor or the ceiling on every configuration, and one choice (batch 8) was made on reported seed 1.
Version 2 (4-digit addition, fresh problems, long batch 4 / short batch 48 at equal tokens, chosen on dev seed
100: long 0.72, short 0.59) was stopped during its seed-3 SFT stages, before any PPO: on seeds 1 and 2 the short
model stayed at the floor (0.01, 0.00) and the long model reached 0.63 and 0.05. Those seeds became development
seeds. Version 3 (the design below with the bare answer as the short CoT, short batch 48; seeds 11-13, its table
in README.md's git history) ran in full (52 minutes): finding 1 reproduced (long 0.73 +- 0.19, short 0.04 +-
0.00 at 5.1M tokens), finding 2 was confounded on every seed (short-CoT starts 0.01-0.025: the model wrote a
2-digit sum's tens right and its units wrong), finding 3 did not reproduce, 4 partly, 5 consistent.
What version 4 changes, and what each change rests on:
- The short CoT is a plain solution, the column results right to left and then the answer ("2+6+0=8, 8+7+0=15,
  4+3+1=8, so 858." and the boxed answer; data.short_cot), no longer the bare answer ("482+376=858."). The
  paper's short CoT is an ordinary step-by-step solution (Qwen2.5-Math-72B-Instruct's), not an answer without
  work; what it lacks next to the long CoT is length, layout and reflection. Version 3's short model was a
  straw man: it could not compute the sum in one go, so finding 1 compared working with not working and finding
  2 had no short start to test. The bare answer stayed at the floor in two more tries on dev seed 2 (weight decay
  0.5: 0.02 after half its steps; batch 16: 0.005 after a quarter). The plain solution on dev seeds 2 and 1
  (batch 14, this design): 0.17, 0.93, 0.985, 0.99 and 0.25, 0.775, 0.93, 0.995 held-out after 1/4, 2/4, 3/4
  and all of its tokens (version 3's long model on its seeds 11-13: 0.36, 0.91, 0.92 at the end). So finding
  1 may now go the other way; that is the test the paper's comparison asks for.
- The short run's batch is 14, the long run's tokens per step (4 x 285 = 1,140 vs 14 x 80 = 1,116), so the two
  runs see the same tokens in about the same optimizer steps (4,480 and 4,580). Version 3's short batch (48)
  was chosen for the bare answer.
- PPO starts from each SFT run's last budget point whose held-out accuracy (sft.py's evaluation there) lies in
  START_RANGE, [0.05, 0.95]: the final model when it does, and also when no point does (that seed is then
  confounded for finding 2, as before). sft.py keeps a checkpoint at every budget point. The plain-solution
  short model passed 0.95 before the end of its tokens on a dev seed (seed 2: 0.17, 0.93, 0.985 at 1/4, 2/4,
  3/4), so its final model would sit at the ceiling; finding 2 needs a start with room above it. All four PPO
  configurations of a CoT type and seed share the start, so findings 3-5 (long start) use it too, and their
  "before" numbers (repetition, reflection) are that start's. The rule reads only SFT evaluations, never a
  PPO result. Departure: the paper starts RL from its final SFT models.
- Reported seeds 21, 22, 23: seeds no version has run before. Checked on two development seeds, not three (the
  third did not fit before this run).
Kept from version 3, and what each rests on:
- Task: a mix of 2-, 3- and 4-digit additions (data.classroom digits=2, max_digits=4), as the issue suggests:
  length varies with difficulty. On dev seed 2 the mix gave the long model 0.29 where 4-digit problems gave
  0.05 (same steps).
- The long trace ends "So the answer is N." (the digits so far, one line up) instead of restating "A+B=N" and a
  "Verify: N-B=A" line: on dev seed 2 a model that wrote every column right still failed the restatement (it
  copies the operands from the prompt, at a distance that varies by trace), 0.025 held-out with a training
  loss of 0.02. Long traces: 2-digit ~180, 4-digit <= 389 characters.
- ~5.1M SFT tokens per run: on every dev seed of version 2 the long model's held-out accuracy was still rising
  steeply at the end of 2.6M (seed 100: 0.41 -> 0.72 over the last quarter; seed 2: 0.01 -> 0.18). The PPO
  stages are unchanged and the 60 minutes hold only this much.
- The long run at batch 4: on dev seed 100 (4-digit, 3.3M tokens) batch 8 -> 0.19 and batch 4 -> 0.72 (twice the
  steps); on dev seed 2, batch 2 -> 0.10 vs batch 4 0.05. The paper compares CoT types at equal tokens (its
  Fig. 1 is accuracy against SFT tokens).
- Generation limit T = 428 tokens: 10% headroom over the longest correct trace (389 of 20,000 4-digit traces).
- Finding 2's precondition is checked per seed (version 1 checked the mean start).
- Finding 3 compares the classic reward with the recipe (cosine + repetition penalty), not with the cosine
  reward alone: the authors' Sec. 4.2 length-stability script (the one ppo.py's PAPER preset copies) runs the
  cosine reward with the repetition penalty on. The cosine-alone run is finding 4's; its length change is
  reported next to finding 3 without a verdict. (Changed after version 1's run, in which the cosine reward
  alone grew length; the reason is the authors' script.)
Model: the built-in `tiny` (0.9M parameters, character tokenizer).
Seeds: 21, 22, 23 (full run); 21 (--quick: half the SFT tokens, 4 PPO iterations, 100 held-out problems, so
  not the full run's numbers). A seed changes the SFT data sample and order, the model init and every sampling
  seed. The held-out set is the same 200 test-split problems (a third of each size, hash-disjoint from
  training) for all runs.
SFT (finding 1): for each CoT type and seed ONE run over one pass of its problems (long 17,920 at batch 4 = 4,480
  steps; short 64,120 at batch 14 = 4,580 steps; both ~5.1M tokens; the 2-digit problems repeat, there are
  only ~7,300 of them), sft.py's lr schedule (3e-3, 5% warmup, cosine to 0.1x), held-out accuracy after 1/4,
  1/2, 3/4 and all of its tokens (budgets spanning 4x). Departure: the paper trains one model per budget; here
  the smaller budgets are checkpoints of one run (lr not yet decayed there, the same for both CoT types).
PPO (findings 2-5): from each seed's chosen SFT checkpoint (above: choose_start), ppo.py's classroom preset
  (cosine reward 2/1/-10/0, exceed -10, KL 0.01, 4 samples per prompt, 2 epochs, seq-mean-token-mean) with 16
  prompts per iteration (64 samples, minibatch 32: 4 optimizer steps per iteration; the preset has 32 prompts),
  --max-new-tokens 428, 10 iterations (held-out evaluation at 0 and 10). Four configurations x 3 seeds:
     long-cosine-rep   long-CoT start, cosine reward + repetition penalty (n = 40 tokens, -0.05: the recipe)
     short-cosine-rep  short-CoT start, the same
     long-classic      long-CoT start, classic 0/1 reward, no repetition penalty
     long-cosine       long-CoT start, cosine reward, no repetition penalty
Evaluation: held-out accuracy at temperature 0.7, top-p 0.95, T = 428, one sample per problem (sft.py's and
  ppo.py's own evaluations). After each stage its final model (an SFT stage: also PPO's start, when that is
  an earlier checkpoint) answers the held-out set once more (analysis.json): accuracy (also per problem size),
  length, truncation, repetition (share of responses with a repeated 40-token n-gram: the penalty's n),
  reflection ("Wait, recheck" lines per response).

Hypotheses and the criterion for "reproduces" (pre-registered). Over seeds: mean and standard error (SE, sample
standard deviation / sqrt(seeds)); a comparison is a per-seed difference (paired by seed), and it holds when its
mean exceeds 2 SE of the differences. With one seed (--quick) only the sign is shown ("direction").
  F1 SFT scaling. (a) long-CoT accuracy at the full budget - short-CoT accuracy at the full budget > 2 SE, and
     (b) long's gain from 1/4 to the full budget - short's gain over the same span > 2 SE. Both: reproduces;
     one: partly.
  F2 RL after SFT (recipe runs). Gain = held-out accuracy at the last PPO iteration - at iteration 0.
     (a) gain from the long start > 2 SE, and (b) gain(long) - gain(short) > 2 SE, over the seeds whose two
     starts both lie in [0.05, 0.95] (START_RANGE). Fewer than 2 such seeds: "confounded"; fewer than all: the
     verdict names the seeds it rests on.
  F3 Length stability (long start, classic 0/1 vs the recipe). Length change = mean rollout length over the last
     3 iterations - over the first 3. (a) change(classic) - change(recipe) > 2 SE, and (b) truncation rate over
     the last 3 iterations, classic - recipe > 2 SE. Both: reproduces; one: partly.
  F4 Repetition hacking (long start, cosine reward, without vs with the penalty). Repetition share of the final
     model's held-out responses. (a) without - with > 2 SE, and (b) without (after PPO) - the SFT start > 2 SE.
     Both: reproduces; one: partly.
  F5 Reflection (recipe, long start). "Wait, recheck" lines per held-out response after PPO - before (the SFT
     model). The paper: RL need not raise it. Consistent with the paper unless after - before > 2 SE (RL
     clearly raised it).
Whatever comes out is reported; the task is not tuned after the reported runs.

Budget (2 CPU cores): two single-threaded runs at once (--workers 2). Measured on this 2-core CPU: version 4's
first run 60.4 minutes, 0.4 over the budget (SFT stages 12.8-13.3 minutes each, long-start PPO stages 3.8-4.2,
short-start 0.8-0.9; the final analysis of a stage 0.1-0.3), --quick 9.0 minutes; the rerun below 45.0 minutes
(long-CoT SFT 11.1-11.3, short-CoT SFT 8.8-8.9, long-start PPO 2.8-3.0, short-start 0.7). Version 3's run took 52.

Version 4 rerun (written 2026-11-30 14:30, before the rerun; the same design, seeds and criteria). The first run
took 60.4 minutes, over the budget, so the code was made faster and the run repeated: PPO trains in micro-batches
of 8 rows (ppo.py's classroom preset; was 64: padding to the longest row of a minibatch cost ~35% of the
training forward/backward), sft.py plans its batches once per epoch (was every step, 1.4% of an SFT run), and
the scheduler starts the long-start PPO stages before the short-start ones (start_order). Expected: SFT and its
analyses are bit-identical (checked: the same losses and weights over 160 steps, 2 epochs of 320 problems), so
F1 and the PPO starts are version 4's exactly; a PPO minibatch's loss is the same in exact arithmetic but its
gradient is summed in another order, so PPO's numbers (F2-F5) are a new draw of rounding, which may not stay
small over 40 optimizer steps of sampling. The README table comes from the rerun (the run within budget);
version 4's first-run numbers stay in the note and this file's history, and any verdict that differs between
the two runs is reported as such. Outcome: 45.0 minutes, and every number in results.json (all five findings,
every stage's analysis, every PPO curve) equal to the first run's: the rounding changes flipped no sampled token.
Planning every step had cost more than measured beforehand (the plan sorts all of a run's problems: 17,920
long, 64,120 short): long-CoT SFT took 11.3 instead of 13.3 minutes, short-CoT 8.8 instead of 12.9.

Quick (written 2026-11-30 15:19, before its run; decided by the budget alone, not by any result). Version 4's
--quick stopped SFT at 3/8 of the tokens, where its long-CoT model was at the floor (0.00 held-out), so findings
2-5 had no working long start. Rule: --quick trains the largest multiple of 1/8 of the full run's SFT tokens that
fits 10 minutes with a minute to spare, by the rerun's stage times: the long-CoT SFT is the critical path
(~1.4 minutes per 1/8 with its evaluations), then two long-start PPO stages in a row (~1.4 each at 4
iterations). 1/2: ~5.6 + 2.8 + 0.2 = ~8.6 minutes; 5/8: ~10.0. So --quick uses 1/2 (8,960 long-CoT problems).
Whatever its long model reaches there is reported; if it is still at the floor, finding 2 stays confounded in
--quick. Outcome: 8.8 minutes; the long-CoT model ended SFT at 0.08 held-out (short 0.34), so both PPO starts were
inside the range. Its directions: finding 1 as the full run's (short ahead); finding 2 +0.01 vs -0.01 (one problem
of 100); findings 3-5 not the full run's (classic shortened length more than the recipe; the cosine reward without
the penalty raised repetition 2% -> 9%, 3% with it, the paper's direction; RL raised reflection 0.09 -> 0.36): a
model that can barely add behaves unlike the full run's 0.8-0.9 models.

Version 4's outcome (README): F1 does not reproduce (at equal tokens the plain short solution is ahead until
the last budget, then level: long - short -0.04 +- 0.10); F2 was tested on all three seeds and found no gain
above 2 SE from either start; F3 "partly" rests on a one-token length difference (no truncation anywhere): the
criterion has no minimum effect size, which a next version should add before its runs; F4 does not reproduce;
F5 consistent.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

README_START, README_END = "<!-- replication:start -->", "<!-- replication:end -->"
REFLECTION = "Wait, recheck"
START_RANGE = (0.05, 0.95)  # F2's precondition, per seed: a PPO start's held-out accuracy away from floor and ceiling

# ----------------------------------------------------------------------------------------------------
# Settings. FULL is the reported run; QUICK one seed, shorter; TOY the smoke test's (seconds).
# ----------------------------------------------------------------------------------------------------
FULL = dict(
    name="full", seeds=(21, 22, 23), root="runs/replicate",
    digits=2, max_digits=4, p_error=0.3,  # the task: data.classroom addition of 2- to 4-digit numbers, sizes mixed
    n_test=200, test_seed=0,  # held-out problems (test split), the same for every run
    max_new_tokens=428,  # T: generation limit at evaluation and in PPO (the cosine reward's T): 1.1 x 389
    sft_long_problems=17920, sft_epochs=1,  # long CoT: 17920 problems / batch 4 = 4480 optimizer steps
    sft_batch={"long": 4, "short": 14},  # long: the better of two on dev seed 100; short: the same tokens per step
    budget_points=4,  # held-out accuracy after 1/4, 2/4, 3/4, 4/4 of the SFT tokens (one run)
    ppo_iterations=10, ppo_eval_every=10, n_prompts=4000,
    ppo_args=["--rep-n", "40", "--rollout-batch", "16", "--train-batch", "32"],
)
QUICK = dict(FULL, name="quick", seeds=(21,), root="runs/replicate-quick", n_test=100, sft_long_problems=8960,
             ppo_iterations=4, ppo_eval_every=4)
TOY = dict(FULL, name="toy", seeds=(1,), root="runs/replicate-toy", n_test=4, max_new_tokens=24,
           sft_long_problems=16, sft_batch={"long": 4, "short": 8}, n_prompts=8, ppo_iterations=2, ppo_eval_every=1,
           ppo_args=["--rep-n", "16", "--rollout-batch", "2", "--n-samples", "2", "--train-batch", "4"])
PRESETS = {"full": FULL, "quick": QUICK, "toy": TOY}

# PPO configurations: name -> (SFT start, reward, repetition penalty on)
PPO_CONFIGS = {
    "long-cosine-rep": ("long", "cosine", True),
    "short-cosine-rep": ("short", "cosine", True),
    "long-classic": ("long", "classic", False),
    "long-cosine": ("long", "cosine", False),
}


# ----------------------------------------------------------------------------------------------------
# Statistics and verdicts (pure functions)
# ----------------------------------------------------------------------------------------------------
def mean_se(xs):
    """(mean, standard error) over seeds: SE = sample standard deviation / sqrt(n); None with one value."""
    xs = [float(x) for x in xs]
    if not xs:
        return float("nan"), None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def holds(diffs):
    """A pre-registered comparison over per-seed differences: True when mean > 2 SE, False when not, None when
    there is one seed (only the sign can be read: see direction)."""
    m, se = mean_se(diffs)
    if se is None:
        return None
    return m > 2 * se


def verdict(parts):
    """Verdict from the criteria's outcomes (True / False / None each): all True 'reproduces', some 'partly',
    none 'does not reproduce'; with one seed (None) 'direction only'."""
    if any(p is None for p in parts):
        return "direction only (1 seed)"
    if all(parts):
        return "reproduces"
    return "partly" if any(parts) else "does not reproduce"


def fmt(m, se, digits=3):
    return f"{m:.{digits}f}" if se is None else f"{m:.{digits}f} ± {se:.{digits}f}"


def repeated_ngram(ids, n):
    """True when some n-gram of ids occurs twice (overlaps allowed)."""
    seen = set()
    for s in range(len(ids) - n + 1):
        g = tuple(ids[s:s + n])
        if g in seen:
            return True
        seen.add(g)
    return False


# ----------------------------------------------------------------------------------------------------
# Stages: the runs and their flags
# ----------------------------------------------------------------------------------------------------
def data_paths(root):
    d = os.path.join(root, "data")
    return {"test": os.path.join(d, "test.jsonl"), "prompts": os.path.join(d, "prompts.jsonl")}


def tokens_per_example(rows, cot, tok):
    """Mean SFT tokens of one example: prompt + response + EOS (what sft.py trains on)."""
    import data
    ex = data.sft_rows(rows, cot=cot, tokenizer=tok)
    return sum(len(tok(r["prompt"] + r["response"])["input_ids"]) + 1 for r in ex) / len(ex)


def sft_sizes(cfg):
    """Problems, batch size and optimizer steps of the long and the short SFT run. Both see the same tokens, each
    at its own batch size (cfg["sft_batch"]); the short run's problems are rounded so that its steps are a
    multiple of the budget points. Returns ({cot: problems}, {cot: batch}, {cot: tokens per example},
    {cot: steps})."""
    import data
    import model as M
    _, tok = M.load("tiny")
    rows = data.classroom(3000, 12345, "train", digits=cfg["digits"], max_digits=cfg["max_digits"],
                          p_error=cfg["p_error"], distinct=False)
    tpe = {cot: tokens_per_example(rows, cot, tok) for cot in ("long", "short")}
    b, pts, ep = cfg["sft_batch"], cfg["budget_points"], cfg["sft_epochs"]
    n_long = cfg["sft_long_problems"]
    if n_long % (b["long"] * pts):
        raise ValueError(f"{n_long} long-CoT problems are not a multiple of batch {b['long']} x {pts} budget points")
    unit = b["short"] * pts  # the short run: the long run's tokens, in whole budget points of whole batches
    n_short = max(1, round(n_long * tpe["long"] / tpe["short"] / unit)) * unit
    sizes = {"long": n_long, "short": n_short}
    return sizes, dict(b), tpe, {cot: sizes[cot] // b[cot] * ep for cot in sizes}


def write_data(cfg, root):
    """The held-out set and the PPO prompts as JSONL (a pure function of the settings; written once)."""
    import data
    paths = data_paths(root)
    knobs = dict(digits=cfg["digits"], max_digits=cfg["max_digits"], p_error=cfg["p_error"])
    for path, rows in ((paths["test"], lambda: data.classroom(cfg["n_test"], cfg["test_seed"], "test", **knobs)),
                       (paths["prompts"], lambda: data.classroom(cfg["n_prompts"], 10_000, "train", **knobs))):
        if not os.path.exists(path):
            data.write_jsonl(path, rows())  # atomic, makes the folder


def stages(cfg, root):
    """name -> {kind, cot/config, seed, argv, after}: every run of the experiment, in the order they start."""
    paths = data_paths(root)
    sizes, batch, _, steps = sft_sizes(cfg)
    T = str(cfg["max_new_tokens"])
    out = {}
    for seed in cfg["seeds"]:
        for cot in ("long", "short"):
            name = f"sft-{cot}-s{seed}"
            out[name] = dict(kind="sft", cot=cot, seed=seed, after=[], argv=[
                "--data", "classroom", "--cot", cot, "--digits", str(cfg["digits"]), "--max-digits",
                str(cfg["max_digits"]), "--n-train", str(sizes[cot]),
                "--epochs", str(cfg["sft_epochs"]), "--batch-size", str(batch[cot]), "--micro-batch-size",
                str(batch[cot]), "--eval-data", paths["test"], "--n-eval", str(cfg["n_test"]),
                "--eval-every", str(steps[cot] // cfg["budget_points"]), "--eval-max-new-tokens", T,
                "--save-every", str(steps[cot] // cfg["budget_points"]), "--keep-checkpoints",
                str(cfg["budget_points"]), "--seed", str(seed), "--out", os.path.join(root, name)])
    for seed in cfg["seeds"]:
        for conf, (cot, rew, rep) in PPO_CONFIGS.items():
            sft_name = f"sft-{cot}-s{seed}"
            argv = ["--model", "tiny", "--sft-out", os.path.join(root, sft_name), "--prompts", paths["prompts"],
                    "--eval-data", paths["test"], "--n-eval", str(cfg["n_test"]), "--max-new-tokens", T,
                    "--iterations", str(cfg["ppo_iterations"]), "--eval-every", str(cfg["ppo_eval_every"]),
                    "--reward", rew, "--seed", str(seed), "--out", os.path.join(root, f"ppo-{conf}-s{seed}")]
            argv += cfg["ppo_args"] + ([] if rep else ["--rep-penalty", "0"])
            out[f"ppo-{conf}-s{seed}"] = dict(kind="ppo", config=conf, cot=cot, seed=seed, after=[sft_name], argv=argv)
    return out


def choose_start(points, lo=START_RANGE[0], hi=START_RANGE[1]):
    """PPO's start among an SFT run's budget points [(step, held-out accuracy), ...] (in step order): the last one
    whose accuracy lies in [lo, hi]; the last one (the final model) when none does."""
    inside = [step for step, acc in points if lo <= acc <= hi]
    return inside[-1] if inside else points[-1][0]


def start_checkpoint(cfg, root, cot, seed):
    """(step, folder) of the SFT checkpoint that the PPO runs of this CoT type and seed start from (choose_start
    over the run's held-out evaluations at its budget points, where sft.py also saved a checkpoint)."""
    run = os.path.join(root, f"sft-{cot}-s{seed}")
    _, held = read_metrics(run)
    step = choose_start([(r["step"], r["eval/accuracy"]) for r in held][-cfg["budget_points"]:])
    path = os.path.join(run, f"checkpoint-{step}")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: the PPO start is missing (sft.py keeps a checkpoint at each budget point)")
    return step, path


def rep_n(cfg):
    return int(cfg["ppo_args"][cfg["ppo_args"].index("--rep-n") + 1])


def analyse(model_dir, cfg, root, seed):
    """The final model's held-out answers once more: accuracy, length, truncation, repetition, reflection."""
    import torch

    import model as M
    from data import load_jsonl
    from eval import evaluate
    net, tok = M.load(model_dir, dtype=torch.float32)
    rows = load_jsonl(data_paths(root)["test"])
    metrics, records = evaluate(net, tok, rows, temperature=0.7, top_p=0.95, max_new_tokens=cfg["max_new_tokens"],
                                seed=50_000 + seed, batch_size=64)
    n = max(len(records), 1)
    ids = [tok(r["response"], add_special_tokens=False)["input_ids"] for r in records]
    rep = [repeated_ngram(x, rep_n(cfg)) for x in ids]
    wrong = [r for r in records if not r["correct"]]
    size = [len(rows[r["index"]]["problem"].split("+")[0]) for r in records]  # digits of the problem's operands
    by_size = {d: [r["correct"] for r, k in zip(records, size) if k == d] for d in sorted(set(size))}
    return {"accuracy": metrics["accuracy"], "mean_length": metrics["mean_length"],
            "accuracy_by_digits": {str(d): sum(v) / len(v) for d, v in by_size.items()},
            "truncation_rate": metrics["truncation_rate"], "repetition_rate": sum(rep) / n,
            "reflection_per_response": sum(r["response"].count(REFLECTION) for r in records) / n,
            "wrong_mean_length": sum(r["num_tokens"] for r in wrong) / max(len(wrong), 1), "n": len(records),
            "examples": [r["response"] for r in records[:3]]}


def run_stage(cfg, root, name):
    """One stage in this process: train (unless its done.json exists: resumes otherwise), then analysis.json."""
    import dist
    spec = stages(cfg, root)[name]
    out = os.path.join(root, name)
    print(f"[replicate] stage {name} (process {os.getpid()})", flush=True)
    t0 = time.time()
    trained = os.path.exists(os.path.join(out, "done.json"))
    if not trained:
        if spec["kind"] == "sft":
            import sft
            sft.main(spec["argv"])
        else:  # the start: the SFT run's chosen checkpoint (choose_start), decided once that run is done
            import ppo
            argv = list(spec["argv"])
            argv[argv.index("--sft-out") + 1] = start_checkpoint(cfg, root, spec["cot"], spec["seed"])[1]
            ppo.main(argv)
    t1 = time.time()
    ckpt = dist.latest_checkpoint(out)
    model_dir = ckpt if spec["kind"] == "sft" else os.path.join(ckpt, "policy")
    result = {"stage": name, **{k: spec[k] for k in ("kind", "cot", "seed") if k in spec},
              "analysis": analyse(model_dir, cfg, root, spec["seed"]),
              "train_minutes": None if trained else (t1 - t0) / 60}
    if spec["kind"] == "sft":  # the PPO start: the final model, or an earlier budget point's (choose_start)
        step, path = start_checkpoint(cfg, root, spec["cot"], spec["seed"])
        result["start_step"] = step
        same = os.path.realpath(path) == os.path.realpath(ckpt)
        result["start_analysis"] = result["analysis"] if same else analyse(path, cfg, root, spec["seed"])
    result["minutes"] = (time.time() - t0) / 60
    with dist.atomic_open(os.path.join(out, "analysis.json")) as f:
        json.dump(result, f, indent=1)
    return result


def start_order(spec):
    """Which ready stage starts first: SFT (every PPO stage waits for one), then the long-start PPO runs, then the
    short-start ones (a quarter as long: last, they fill the gaps). Version 4, in stage order, left one core idle
    for the last 2.7 of its 60.4 minutes."""
    return (spec["kind"] != "sft", spec["cot"] != "long")


def to_start(todo, done, slots):
    """The stages to start now, at most `slots`: those whose SFT start is done, in start_order (ties: stage order)."""
    ready = [n for n in todo if all(a in done for a in todo[n]["after"])]
    return sorted(ready, key=lambda n: start_order(todo[n]))[:max(slots, 0)]


def run_all(cfg, root, workers):
    """Every stage not yet finished, `workers` at a time (subprocesses, one thread each); 0: here, one by one."""
    every = stages(cfg, root)
    todo = {n: s for n, s in every.items() if not os.path.exists(os.path.join(root, n, "analysis.json"))}
    done = set(every) - set(todo)
    if workers == 0:
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small models: one thread is as fast, and never stalls on a busy machine
        try:
            for name in todo:
                run_stage(cfg, root, name)
        finally:
            torch.set_num_threads(threads)
        return
    running = {}
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    t0 = time.time()
    while todo or running:
        for name in to_start(todo, done, workers - len(running)):
            os.makedirs(os.path.join(root, name), exist_ok=True)
            log = open(os.path.join(root, name, "log.txt"), "a")
            cmd = [sys.executable, os.path.abspath(__file__), "--stage", name, "--preset", cfg["name"], "--root", root,
                   "--seeds", ",".join(map(str, cfg["seeds"]))]
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
            del todo[name]
            print(f"[replicate {(time.time() - t0) / 60:5.1f} min] start {name}", flush=True)
        time.sleep(1)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode != 0:
                for p, _ in running.values():
                    p.terminate()
                raise RuntimeError(f"stage {name} failed (exit {proc.returncode}): see {root}/{name}/log.txt")
            done.add(name)
            print(f"[replicate {(time.time() - t0) / 60:5.1f} min] done  {name}", flush=True)


# ----------------------------------------------------------------------------------------------------
# Collecting: the findings from the stages' files
# ----------------------------------------------------------------------------------------------------
def read_metrics(run_dir):
    """(rollout rows, held-out rows) of a run's metrics.jsonl, each a list of dicts sorted by step."""
    import dist
    rows, _ = dist.read_log(os.path.join(run_dir, "metrics.jsonl"))
    key = "iteration" if rows and "iteration" in rows[0] else "step"
    train = {r[key]: r for r in rows if "eval/accuracy" not in r}
    held = {r[key]: r for r in rows if "eval/accuracy" in r}
    return [train[k] for k in sorted(train)], [held[k] for k in sorted(held)]


def collect(cfg, root, minutes=None):
    """results.json's content: per-stage numbers, and per finding the statistics and the verdict."""
    seeds = list(cfg["seeds"])
    sizes, batch, tpe, steps = sft_sizes(cfg)
    st = stages(cfg, root)
    ana = {n: json.load(open(os.path.join(root, n, "analysis.json"))) for n in st}
    res = {"preset": cfg["name"], "seeds": seeds, "minutes": minutes,
           "stage_minutes": {n: a["minutes"] for n, a in ana.items()}, "findings": {}}

    # ---- F1: held-out accuracy against SFT tokens (the evaluations along each run) ----
    pts = cfg["budget_points"]
    acc = {}
    for cot in ("long", "short"):
        for s in seeds:
            _, held = read_metrics(os.path.join(root, f"sft-{cot}-s{s}"))
            acc[cot, s] = [r["eval/accuracy"] for r in held][-pts:]
    f1 = {"steps": {cot: [steps[cot] * (i + 1) // pts for i in range(pts)] for cot in steps}, "problems": sizes,
          "batch": batch, "tokens_per_example": tpe, "epochs": cfg["sft_epochs"],
          "tokens": [sizes["long"] * cfg["sft_epochs"] * tpe["long"] * (i + 1) / pts for i in range(pts)],
          "tokens_short": [sizes["short"] * cfg["sft_epochs"] * tpe["short"] * (i + 1) / pts for i in range(pts)]}
    for cot in ("long", "short"):
        f1[cot] = [mean_se([acc[cot, s][i] for s in seeds]) for i in range(pts)]
    d_final = [acc["long", s][-1] - acc["short", s][-1] for s in seeds]
    d_slope = [(acc["long", s][-1] - acc["long", s][0]) - (acc["short", s][-1] - acc["short", s][0]) for s in seeds]
    crit = [holds(d_final), holds(d_slope)]
    f1.update(long_minus_short=mean_se(d_final), gain_long_minus_gain_short=mean_se(d_slope), criteria=crit,
              verdict=verdict(crit), per_seed={f"{c}-s{s}": acc[c, s] for c in ("long", "short") for s in seeds})
    res["findings"]["F1"] = f1

    # ---- PPO curves ----
    ppo = {}
    for conf in PPO_CONFIGS:
        for s in seeds:
            train, held = read_metrics(os.path.join(root, f"ppo-{conf}-s{s}"))
            ppo[conf, s] = {"train": train, "held": held, "analysis": ana[f"ppo-{conf}-s{s}"]["analysis"]}

    # ---- F2: RL gain from the long and from the short start (recipe), on the seeds whose starts are fair ----
    acc0 = {(c, s): ppo[f"{c}-cosine-rep", s]["held"][0]["eval/accuracy"] for c in ("long", "short") for s in seeds}
    acc1 = {(c, s): ppo[f"{c}-cosine-rep", s]["held"][-1]["eval/accuracy"] for c in ("long", "short") for s in seeds}
    fair = [s for s in seeds if all(START_RANGE[0] <= acc0[c, s] <= START_RANGE[1] for c in ("long", "short"))]
    g = {c: [acc1[c, s] - acc0[c, s] for s in fair] for c in ("long", "short")}
    crit = [holds(g["long"]), holds([a - b for a, b in zip(g["long"], g["short"])])]
    if len(fair) < min(2, len(seeds)):
        v = (f"confounded (a start outside [{START_RANGE[0]}, {START_RANGE[1]}] on {len(seeds) - len(fair)} of "
             f"{len(seeds)} seeds)")
    else:
        v = verdict(crit) + (f" (on seeds {', '.join(map(str, fair))} of {len(seeds)}: the others had a start outside "
                             f"[{START_RANGE[0]}, {START_RANGE[1]}])" if len(fair) < len(seeds) else "")
    res["findings"]["F2"] = {
        "start": {c: mean_se([acc0[c, s] for s in seeds]) for c in ("long", "short")},
        "end": {c: mean_se([acc1[c, s] for s in seeds]) for c in ("long", "short")},
        "per_seed": {f"{c}-s{s}": [acc0[c, s], acc1[c, s]] for c in ("long", "short") for s in seeds},
        "start_step": {f"{c}-s{s}": ana[f"sft-{c}-s{s}"]["start_step"] for c in ("long", "short") for s in seeds},
        "fair_seeds": fair, "gain_long": mean_se(g["long"]), "gain_short": mean_se(g["short"]),
        "gain_long_minus_short": mean_se([a - b for a, b in zip(g["long"], g["short"])]),
        "criteria": crit, "verdict": v}

    # ---- F3: length and truncation under the classic reward vs the recipe (cosine + repetition penalty) ----
    def window(rows, key, last):
        xs = [r[key] for r in rows]
        xs = xs[-3:] if last else xs[:3]
        return sum(xs) / len(xs)
    f3_runs = ("long-classic", "long-cosine-rep", "long-cosine")  # the last: no verdict, reported (finding 4's run)
    dl = {c: [window(ppo[c, s]["train"], "response_length", True) - window(ppo[c, s]["train"], "response_length", False)
              for s in seeds] for c in f3_runs}
    tr = {c: [window(ppo[c, s]["train"], "truncation_rate", True) for s in seeds] for c in f3_runs}
    crit = [holds([a - b for a, b in zip(dl["long-classic"], dl["long-cosine-rep"])]),
            holds([a - b for a, b in zip(tr["long-classic"], tr["long-cosine-rep"])])]
    res["findings"]["F3"] = {"length_change": {c: mean_se(v) for c, v in dl.items()},
                             "final_truncation": {c: mean_se(v) for c, v in tr.items()},
                             "final_accuracy": {c: mean_se([window(ppo[c, s]["train"], "accuracy", True) for s in seeds])
                                                for c in dl},
                             "criteria": crit, "verdict": verdict(crit)}

    # ---- F4: repetition with and without the penalty ----
    rep = {c: [ppo[c, s]["analysis"]["repetition_rate"] for s in seeds] for c in ("long-cosine", "long-cosine-rep")}
    start = {s: ana[f"sft-long-s{s}"]["start_analysis"] for s in seeds}  # the PPO start (choose_start)
    rep_sft = [start[s]["repetition_rate"] for s in seeds]
    wl = {c: mean_se([ppo[c, s]["analysis"]["wrong_mean_length"] for s in seeds]) for c in rep}
    crit = [holds([a - b for a, b in zip(rep["long-cosine"], rep["long-cosine-rep"])]),
            holds([a - b for a, b in zip(rep["long-cosine"], rep_sft)])]
    res["findings"]["F4"] = {"repetition_rate": {"sft": mean_se(rep_sft), **{c: mean_se(v) for c, v in rep.items()}},
                             "wrong_mean_length": {"sft": mean_se([start[s]["wrong_mean_length"] for s in seeds]),
                                                   **wl},
                             "criteria": crit, "verdict": verdict(crit)}

    # ---- F5: reflection before and after RL ----
    before = [start[s]["reflection_per_response"] for s in seeds]
    after = {c: [ppo[c, s]["analysis"]["reflection_per_response"] for s in seeds] for c in PPO_CONFIGS}
    raised = holds([a - b for a, b in zip(after["long-cosine-rep"], before)])
    res["findings"]["F5"] = {"before": mean_se(before), "before_short": mean_se(
        [ana[f"sft-short-s{s}"]["start_analysis"]["reflection_per_response"] for s in seeds]),
        "after": {c: mean_se(v) for c, v in after.items()},
        "change": mean_se([a - b for a, b in zip(after["long-cosine-rep"], before)]),
        "criteria": [raised], "verdict": "direction only (1 seed)" if raised is None else
        ("does not reproduce (RL raised it)" if raised else "consistent with the paper (not raised)")}
    res["ppo_curves"] = {f"{c}-s{s}": {"train": [(r["iteration"], r["accuracy"], r["response_length"], r["truncation_rate"])
                                                 for r in v["train"]],
                                       "held": [(r["iteration"], r["eval/accuracy"], r["eval/mean_length"]) for r in v["held"]]}
                         for (c, s), v in ppo.items()}
    res["analysis"] = {n: a["analysis"] for n, a in ana.items()}
    res["start_analysis"] = {n: a["start_analysis"] for n, a in ana.items() if "start_analysis" in a}  # SFT: PPO's start
    return res


# ----------------------------------------------------------------------------------------------------
# Report: table, plots
# ----------------------------------------------------------------------------------------------------
def table(res):
    F = res["findings"]
    f1, f2, f3, f4, f5 = (F[k] for k in ("F1", "F2", "F3", "F4", "F5"))
    n = len(res["seeds"])
    mins = f"{res['minutes']:.0f} minutes wall" if res.get("minutes") else "minutes: see results.json"
    cmd = {"full": "python replicate.py", "quick": "python replicate.py --quick"}.get(
        res["preset"], f"python replicate.py --preset {res['preset']}")
    lines = [f"Made by `{cmd}` (tiny model, classroom addition of 2- to 4-digit numbers, CPU; seed{'s' * (n > 1)} "
             f"{', '.join(map(str, res['seeds']))}; "
             f"{mins}). Mean ± standard error over {n} seed{'s' * (n > 1)}; criteria in replicate.py's docstring.", "",
             "| finding | measured | verdict |", "|---|---|---|"]
    k = lambda x: f"{x / 1e6:.2f}M"  # noqa: E731
    acc = lambda cot: ", ".join(f"{fmt(*ms, 2)}" for ms in f1[cot])  # noqa: E731
    lines.append(f"| 1. SFT scaling: held-out accuracy at {', '.join(k(t) for t in f1['tokens'])} SFT tokens | "
                 f"long CoT {acc('long')}; short CoT {acc('short')}; long - short at the largest budget "
                 f"{fmt(*f1['long_minus_short'])} | {f1['verdict']} |")
    gain = {c: f" (gain {fmt(*f2[f'gain_{c}'])})" if f2["fair_seeds"] else "" for c in ("long", "short")}
    def at(c, s):  # the start's budget point (F1's steps), when it is not the final model
        k, points = f2["start_step"][f"{c}-s{s}"], f1["steps"][c]
        return "" if k == points[-1] else f" (at {points.index(k) + 1}/{len(points)} of its SFT)"
    starts = {c: " / ".join(f"{f2['per_seed'][f'{c}-s{s}'][0]:.3f}{at(c, s)}" for s in res["seeds"])
              for c in ("long", "short")}
    lines.append(f"| 2. RL after SFT (cosine + repetition penalty) | long start {fmt(*f2['start']['long'])} -> "
                 f"{fmt(*f2['end']['long'])}{gain['long']}; short start {fmt(*f2['start']['short'])} -> "
                 f"{fmt(*f2['end']['short'])}{gain['short']}; starts per seed: long {starts['long']}, short "
                 f"{starts['short']} | {f2['verdict']} |")
    lc, ft = f3["length_change"], f3["final_truncation"]
    lines.append(f"| 3. Length stability (long start): classic 0/1 vs the recipe (cosine + repetition penalty) | "
                 f"length change (tokens): classic {fmt(*lc['long-classic'], 1)}, recipe {fmt(*lc['long-cosine-rep'], 1)} "
                 f"(cosine without the penalty {fmt(*lc['long-cosine'], 1)}); truncation at the end: classic "
                 f"{fmt(*ft['long-classic'])}, recipe {fmt(*ft['long-cosine-rep'])} | {f3['verdict']} |")
    r = f4["repetition_rate"]
    lines.append(f"| 4. Repetition (cosine reward) | responses with a repeated n-gram: SFT start {fmt(*r['sft'])}, "
                 f"without penalty {fmt(*r['long-cosine'])}, with {fmt(*r['long-cosine-rep'])} | {f4['verdict']} |")
    lines.append(f"| 5. Reflection (\"Wait, recheck\" lines per response) | before RL {fmt(*f5['before'])}, after "
                 f"(recipe) {fmt(*f5['after']['long-cosine-rep'])}; change {fmt(*f5['change'])} | {f5['verdict']} |")
    lines += ["", f"Held-out: the same unseen problems for every run, one sample each at temperature 0.7, top-p 0.95. "
              f"Plots: `{res['root']}/f1_sft_scaling.png` ... `f5_reflection.png`; every number: `results.json`."]
    return "\n".join(lines)


NOT_RUN = ("Not yet run: `python replicate.py` writes this table (and `runs/replicate/results.json` and the "
           "plots) when it finishes.")


def write_readme(text, readme="README.md"):
    """Replace what lies between the README's replication markers with `text`; the rest stays as it is."""
    import dist
    body = open(readme).read()
    if README_START not in body or README_END not in body:
        raise ValueError(f"{readme}: no {README_START} ... {README_END} markers")
    head, rest = body.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    with dist.atomic_open(readme) as f:
        f.write(head + README_START + "\n" + text + "\n" + README_END + tail)


def plots(res, root):
    """One PNG per finding in root."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    F, seeds = res["findings"], res["seeds"]

    def band(ax, xs, runs, label, **kw):  # mean over seeds with a +- SE band
        stats = [mean_se(v) for v in zip(*runs)]
        m = [s[0] for s in stats]
        ax.plot(xs, m, label=label, **kw)
        if len(seeds) > 1:
            se = [s[1] for s in stats]
            ax.fill_between(xs, [a - b for a, b in zip(m, se)], [a + b for a, b in zip(m, se)], alpha=0.2)

    saved = []
    f1 = F["F1"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for cot in ("long", "short"):
        ms = f1[cot]
        ax.errorbar(f1["tokens" if cot == "long" else "tokens_short"], [m for m, _ in ms], yerr=[se or 0 for _, se in ms], marker="o", capsize=3,
                    label=f"{cot} CoT")
    ax.set(xscale="log", xlabel="SFT tokens", ylabel="held-out accuracy", title="1. SFT scaling")
    ax.legend()
    saved.append(_save(fig, root, "f1_sft_scaling.png"))

    cur = res["ppo_curves"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for c, color in (("long-cosine-rep", "C0"), ("short-cosine-rep", "C1")):
        tr = [cur[f"{c}-s{s}"]["train"] for s in seeds]  # rollouts: every iteration
        band(a1, [t[0] for t in tr[0]], [[t[1] for t in run] for run in tr], f"{c} (rollouts)", color=color)
        band(a2, [t[0] for t in tr[0]], [[t[2] for t in run] for run in tr], f"{c} (rollouts)", color=color)
        held = [cur[f"{c}-s{s}"]["held"] for s in seeds]  # held-out: at the evaluations
        its = [h[0] for h in held[0]]
        a1.errorbar(its, *_mse([[h[1] for h in run] for run in held]), fmt="o", color=color, capsize=3,
                    label=f"{c} (held-out)")
        a2.errorbar(its, *_mse([[h[2] for h in run] for run in held]), fmt="o", color=color, capsize=3)
    a1.set(xlabel="PPO iteration", ylabel="accuracy", title="2. RL after long vs short SFT")
    a2.set(xlabel="PPO iteration", ylabel="tokens", title="response length")
    a1.legend(fontsize=7)
    saved.append(_save(fig, root, "f2_rl_after_sft.png"))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for c in ("long-classic", "long-cosine-rep", "long-cosine"):
        tr = [cur[f"{c}-s{s}"]["train"] for s in seeds]
        its = [t[0] for t in tr[0]]
        band(a1, its, [[t[2] for t in run] for run in tr], c)
        band(a2, its, [[t[3] for t in run] for run in tr], c)
    a1.set(xlabel="PPO iteration", ylabel="tokens", title="3. rollout length")
    a2.set(xlabel="PPO iteration", ylabel="share truncated", title=f"truncation at T = {res['max_new_tokens']}")
    a1.legend()
    saved.append(_save(fig, root, "f3_length_stability.png"))

    for key, fname, title, stage_key in (
            ("repetition_rate", "f4_repetition.png", "4. responses with a repeated n-gram", None),
            ("reflection_per_response", "f5_reflection.png", '5. "Wait, recheck" lines per response', None)):
        fig, ax = plt.subplots(figsize=(7, 3.6))
        names = ["sft-long"] + [f"ppo-{c}" for c in PPO_CONFIGS]
        vals = [mean_se([res["start_analysis" if n.startswith("sft") else "analysis"][f"{n}-s{s}"][key]
                         for s in seeds]) for n in names]
        ax.bar(range(len(names)), [m for m, _ in vals], yerr=[se or 0 for _, se in vals], capsize=3)
        ax.set_xticks(range(len(names)), ["SFT (long, PPO's start)"] + list(PPO_CONFIGS), rotation=20, fontsize=8)
        ax.set(title=title)
        saved.append(_save(fig, root, fname))
    return saved


def _mse(runs):
    """(means, SEs) per point over seeds, for errorbar: runs is one list of values per seed."""
    stats = [mean_se(v) for v in zip(*runs)]
    return [m for m, _ in stats], [se or 0 for _, se in stats]


def _save(fig, root, name):
    import matplotlib.pyplot as plt
    path = os.path.join(root, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def replicate(cfg, root=None, workers=2, readme="README.md"):
    """The experiment top to bottom: data, stages (reusing finished ones), results.json, plots, table."""
    root = root or cfg["root"]
    t0 = time.time()
    os.makedirs(root, exist_ok=True)
    write_data(cfg, root)
    run_all(cfg, root, workers)
    res = collect(cfg, root)
    res.update(root=root, max_new_tokens=cfg["max_new_tokens"], minutes=_wall(root, time.time() - t0))
    import dist
    with dist.atomic_open(os.path.join(root, "results.json")) as f:
        json.dump(res, f, indent=1)
    try:
        plots(res, root)
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
    text = table(res)
    with dist.atomic_open(os.path.join(root, "results.md")) as f:
        f.write(text + "\n")
    if readme:
        write_readme(text, readme)
    print(text)
    return res


def _wall(root, seconds):
    """Minutes of wall time over every call that worked on this root (an interrupted run adds up)."""
    path = os.path.join(root, "wall.json")
    prev = json.load(open(path))["seconds"] if os.path.exists(path) else 0.0
    with open(path, "w") as f:
        json.dump({"seconds": prev + seconds}, f)
    return (prev + seconds) / 60


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="The miniature replication of the paper's findings (CPU)")
    ap.add_argument("--quick", action="store_true", help="one seed, shorter runs (<= 10 minutes on 2 cores)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="settings by name (full, quick, toy); --quick = quick")
    ap.add_argument("--root", help="where the runs go [runs/replicate, --quick: runs/replicate-quick]")
    ap.add_argument("--workers", type=int, default=2, help="runs at once, each single-threaded (0: in this process)")
    ap.add_argument("--readme", default=None, help="README whose table is replaced [README.md for the full run; "
                    "--quick writes only ROOT/results.md]")
    ap.add_argument("--seeds", help="comma list replacing the preset's seeds (development: never 21, 22, 23)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage (what the workers execute)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import dist
    dist.require(args.workers >= 0, "--workers", args.workers, "an integer >= 0 (0: every stage in this process)")
    cfg = PRESETS[args.preset or ("quick" if args.quick else "full")]
    if args.seeds:
        try:
            seeds = tuple(int(x) for x in args.seeds.split(","))
        except ValueError:
            dist.arg_error("--seeds", f"got {args.seeds!r}, expected a comma list of integers")
        cfg = dict(cfg, seeds=seeds)
    root = args.root or cfg["root"]
    if args.stage:
        return run_stage(cfg, root, args.stage)
    readme = args.readme if args.readme is not None else ("README.md" if cfg["name"] == "full" else "")
    return replicate(cfg, root, args.workers, readme)


if __name__ == "__main__":
    main()
