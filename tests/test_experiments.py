"""Every experiment of the paper as one command (README.md, "The paper's experiments"): each row's command parses and
reaches the settings of the authors' launch script it names, field by field. The tables below are those scripts'
values with their line numbers (eddycmu/demystify-long-cot @ 29fddcc, openrlhf/scripts/section_4__impact_of_reward_
design_on_long_cot/ and section_5__scaling_up_verifiable_reward/; Sec. 3.1's SFT scripts @ 7cec701,
openrlhf/scripts/section_3.1_sft_scaling/), written out by hand from the scripts, as our field names: the authors'
flag -> ours is --rollout_batch_size -> rollout_batch, --n_samples_per_prompt -> n_samples, --train_batch_size ->
train_batch, --max_epochs -> ppo_epochs, --num_episodes x (prompts // rollout batch) -> iterations (MATH train:
7,500 prompts, --max_samples caps them), --lambd -> lam, --gamma a,b -> gamma, rep_gamma, --prompt_max_len,
--generate_max_len, --actor/critic_learning_rate, --init_kl_coef -> kl_coef, --remote_rm_url math_rule -> classic
reward, math_rule_cosine_scale -> cosine, + math_rule_repetition_dense -> rep_penalty / rep_n (else 0: one reward
type), the cosine scale values -> --cosine r0_correct,rL_correct,r0_wrong,rL_wrong,exceed (reward/cosine.py:75-92:
r0 = max_value_correct, rL = min_value_correct, and for wrong answers r0 = min, rL = max), --math_rule_common_
score_fn judge -> verifier judge. Values no script sets come from their CLI (openrlhf/cli/train_ppo_ray.py) and
are checked for every row (CLI_DEFAULTS)."""
import re
import shlex
from pathlib import Path

import pytest

import ppo
import reward as RW
import sft

ROOT = Path(__file__).resolve().parent.parent

# values (and lines) of each launch script, in our field names; "iterations": num_episodes x (prompts // 512) at
# the lines of --num_episodes and --max_samples; "classic": (correct, wrong, exceed) of the classic reward
SCRIPTS = {
    "section_4.1__cot_length_stability__llama_classic.sh": {
        "rollout_batch": (512, "70"), "n_samples": (8, "71"), "train_batch": (512, "68"), "ppo_epochs": (1, "73"),
        "iterations": (8 * (7500 // 512), "74, 72"), "lam": (1.0, "75"), "gamma": (1.0, "76"),
        "max_prompt_len": (2048, "77"), "max_new_tokens": (14336, "78"), "actor_lr": (5e-07, "81"),
        "critic_lr": (4.5e-06, "82"), "kl_coef": (0.01, "83"), "reward": ('classic', "57"),
        "rep_penalty": (0.0, "57"), "classic": ((1.0, 0.0, 0.0), "59-60, 58"), "verifier": ('rule', "57"),
    },
    "section_4.1__cot_length_stability__qwen_classic.sh": {
        "rollout_batch": (512, "70"), "n_samples": (8, "71"), "train_batch": (512, "68"), "ppo_epochs": (1, "73"),
        "iterations": (8 * (7500 // 512), "74, 72"), "lam": (1.0, "75"), "gamma": (1.0, "76"),
        "max_prompt_len": (2048, "77"), "max_new_tokens": (14336, "78"), "actor_lr": (5e-07, "81"),
        "critic_lr": (4.5e-06, "82"), "kl_coef": (0.01, "83"), "reward": ('classic', "57"),
        "rep_penalty": (0.0, "57"), "classic": ((1.0, 0.0, 0.0), "59-60, 58"), "verifier": ('rule', "57"),
    },
    "section_4.2__active_scaling_of_cot_length__classic.sh": {
        "rollout_batch": (512, "71"), "n_samples": (16, "72"), "train_batch": (512, "69"), "ppo_epochs": (2, "74"),
        "iterations": (8 * (7500 // 512), "75, 73"), "lam": (1.0, "76"), "gamma": (1.0, "77"),
        "max_prompt_len": (2048, "78"), "max_new_tokens": (14336, "79"), "actor_lr": (5e-07, "82"),
        "critic_lr": (9e-06, "83"), "kl_coef": (0.01, "84"), "reward": ('classic', "58"),
        "rep_penalty": (0.0, "58"), "classic": ((1.0, 0.0, 0.0), "60-61, 59"), "verifier": ('rule', "58"),
    },
    "section_4.2__active_scaling_of_cot_length__cosine.sh": {
        "rollout_batch": (512, "72"), "n_samples": (16, "73"), "train_batch": (512, "70"), "ppo_epochs": (2, "75"),
        "iterations": (8 * (7500 // 512), "76, 74"), "lam": (1.0, "77"), "gamma": (1.0, "78"),
        "max_prompt_len": (2048, "79"), "max_new_tokens": (14336, "80"), "actor_lr": (5e-07, "83"),
        "critic_lr": (9e-06, "84"), "kl_coef": (0.01, "85"), "reward": ('cosine', "58"), "rep_penalty": (0.0, "58"),
        "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "60-63, 59"), "verifier": ('rule', "58"),
    },
    "section_4.2__active_scaling_of_cot_length__cosine_repetition_penalty.sh": {
        "rollout_batch": (512, "74"), "n_samples": (16, "75"), "train_batch": (512, "72"), "ppo_epochs": (2, "77"),
        "iterations": (8 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "58"),
        "rep_penalty": (-0.05, "61"), "rep_n": (40, "60"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "62-65, 59"),
        "verifier": ('rule', "58"),
    },
    "section_4.3__cosine_hyperparameters__reward_A.sh": {
        "rollout_batch": (512, "74"), "n_samples": (4, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (4 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('0.0,10.0,0.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.3__cosine_hyperparameters__reward_B.sh": {
        "rollout_batch": (512, "74"), "n_samples": (4, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (4 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('6.0,5.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.3__cosine_hyperparameters__reward_C.sh": {
        "rollout_batch": (512, "74"), "n_samples": (4, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (4 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('10.0,9.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.4__context_window_size__16k.sh": {
        "rollout_batch": (512, "74"), "n_samples": (8, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (8 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.4__context_window_size__4k.sh": {
        "rollout_batch": (512, "74"), "n_samples": (8, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (8 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (2048, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.4__context_window_size__8k.sh": {
        "rollout_batch": (512, "74"), "n_samples": (8, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (8 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (6144, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.5__length_reward_hacking__cosine.sh": {
        "rollout_batch": (512, "72"), "n_samples": (16, "73"), "train_batch": (512, "70"), "ppo_epochs": (2, "75"),
        "iterations": (8 * (7500 // 512), "76, 74"), "lam": (1.0, "77"), "gamma": (1.0, "78"),
        "max_prompt_len": (2048, "79"), "max_new_tokens": (14336, "80"), "actor_lr": (5e-07, "83"),
        "critic_lr": (9e-06, "84"), "kl_coef": (0.01, "85"), "reward": ('cosine', "58"), "rep_penalty": (0.0, "58"),
        "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "60-63, 59"), "verifier": ('rule', "58"),
    },
    "section_4.5__length_reward_hacking__cosine_repetition_penalty.sh": {
        "rollout_batch": (512, "74"), "n_samples": (16, "75"), "train_batch": (512, "72"), "ppo_epochs": (2, "77"),
        "iterations": (8 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (1.0, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "58"),
        "rep_penalty": (-0.05, "61"), "rep_n": (40, "60"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "62-65, 59"),
        "verifier": ('rule', "58"),
    },
    "section_4.6__optimal_discount_factors__gammas_100_100.sh": {
        "rollout_batch": (512, "73"), "n_samples": (4, "74"), "train_batch": (512, "71"), "ppo_epochs": (1, "76"),
        "iterations": (4 * (7500 // 512), "77, 75"), "lam": (1.0, "78"), "gamma": (1.0, "79"),
        "rep_gamma": (1.0, "79"), "max_prompt_len": (2048, "80"), "max_new_tokens": (14336, "81"),
        "actor_lr": (5e-07, "84"), "critic_lr": (9e-06, "85"), "kl_coef": (0.01, "86"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.6__optimal_discount_factors__gammas_100_99.sh": {
        "rollout_batch": (512, "73"), "n_samples": (4, "74"), "train_batch": (512, "71"), "ppo_epochs": (1, "76"),
        "iterations": (4 * (7500 // 512), "77, 75"), "lam": (1.0, "78"), "gamma": (1.0, "79"),
        "rep_gamma": (0.99, "79"), "max_prompt_len": (2048, "80"), "max_new_tokens": (14336, "81"),
        "actor_lr": (5e-07, "84"), "critic_lr": (9e-06, "85"), "kl_coef": (0.01, "86"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.6__optimal_discount_factors__gammas_100_999.sh": {
        "rollout_batch": (512, "73"), "n_samples": (4, "74"), "train_batch": (512, "71"), "ppo_epochs": (1, "76"),
        "iterations": (4 * (7500 // 512), "77, 75"), "lam": (1.0, "78"), "gamma": (1.0, "79"),
        "rep_gamma": (0.999, "79"), "max_prompt_len": (2048, "80"), "max_new_tokens": (14336, "81"),
        "actor_lr": (5e-07, "84"), "critic_lr": (9e-06, "85"), "kl_coef": (0.01, "86"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.6__optimal_discount_factors__gammas_999_99.sh": {
        "rollout_batch": (512, "74"), "n_samples": (4, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (4 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (0.999, "80"),
        "rep_gamma": (0.99, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.6__optimal_discount_factors__gammas_999_999.sh": {
        "rollout_batch": (512, "74"), "n_samples": (4, "75"), "train_batch": (512, "72"), "ppo_epochs": (1, "77"),
        "iterations": (4 * (7500 // 512), "78, 76"), "lam": (1.0, "79"), "gamma": (0.999, "80"),
        "rep_gamma": (0.999, "80"), "max_prompt_len": (2048, "81"), "max_new_tokens": (14336, "82"),
        "actor_lr": (5e-07, "85"), "critic_lr": (9e-06, "86"), "kl_coef": (0.01, "87"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_4.6__optimal_discount_factors__gammas_99_99.sh": {
        "rollout_batch": (512, "73"), "n_samples": (4, "74"), "train_batch": (512, "71"), "ppo_epochs": (1, "76"),
        "iterations": (4 * (7500 // 512), "77, 75"), "lam": (1.0, "78"), "gamma": (0.99, "79"),
        "rep_gamma": (0.99, "79"), "max_prompt_len": (2048, "80"), "max_new_tokens": (14336, "81"),
        "actor_lr": (5e-07, "84"), "critic_lr": (9e-06, "85"), "kl_coef": (0.01, "86"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "57"),
    },
    "section_5.2__scaling_up_rl_with_noisy_verifiable_data__judge_filtered.sh": {
        "rollout_batch": (512, "77"), "n_samples": (4, "78"), "train_batch": (512, "75"), "ppo_epochs": (1, "80"),
        "iterations": (1 * (30000 // 512), "81, 79"), "lam": (1.0, "82"), "gamma": (1.0, "83"),
        "rep_gamma": (0.99, "83"), "max_prompt_len": (2048, "84"), "max_new_tokens": (14336, "85"),
        "actor_lr": (5e-07, "88"), "critic_lr": (9e-06, "89"), "kl_coef": (0.01, "90"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('judge', "65"),
    },
    "section_5.2__scaling_up_rl_with_noisy_verifiable_data__judge_unfiltered.sh": {
        "rollout_batch": (512, "77"), "n_samples": (4, "78"), "train_batch": (512, "75"), "ppo_epochs": (1, "80"),
        "iterations": (1 * (30000 // 512), "81, 79"), "lam": (1.0, "82"), "gamma": (1.0, "83"),
        "rep_gamma": (0.99, "83"), "max_prompt_len": (2048, "84"), "max_new_tokens": (14336, "85"),
        "actor_lr": (5e-07, "88"), "critic_lr": (9e-06, "89"), "kl_coef": (0.01, "90"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('judge', "65"),
    },
    "section_5.2__scaling_up_rl_with_noisy_verifiable_data__rule_filtered.sh": {
        "rollout_batch": (512, "75"), "n_samples": (4, "76"), "train_batch": (512, "73"), "ppo_epochs": (1, "78"),
        "iterations": (1 * (30000 // 512), "79, 77"), "lam": (1.0, "80"), "gamma": (1.0, "81"),
        "rep_gamma": (0.99, "81"), "max_prompt_len": (2048, "82"), "max_new_tokens": (14336, "83"),
        "actor_lr": (5e-07, "86"), "critic_lr": (9e-06, "87"), "kl_coef": (0.01, "88"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "65"),
    },
    "section_5.2__scaling_up_rl_with_noisy_verifiable_data__rule_unfiltered.sh": {
        "rollout_batch": (512, "75"), "n_samples": (4, "76"), "train_batch": (512, "73"), "ppo_epochs": (1, "78"),
        "iterations": (1 * (30000 // 512), "79, 77"), "lam": (1.0, "80"), "gamma": (1.0, "81"),
        "rep_gamma": (0.99, "81"), "max_prompt_len": (2048, "82"), "max_new_tokens": (14336, "83"),
        "actor_lr": (5e-07, "86"), "critic_lr": (9e-06, "87"), "kl_coef": (0.01, "88"), "reward": ('cosine', "57"),
        "rep_penalty": (-0.05, "60"), "rep_n": (40, "59"), "cosine": ('2.0,1.0,-10.0,0.0,-10.0', "61-64, 58"),
        "verifier": ('rule', "65"),
    },
}
# what no script sets: their CLI's defaults and the code behind them (as ppo.PAPER cites them)
CLI_DEFAULTS = {
    "temperature": (1.0, "CLI:325"), "top_p": (1.0, "CLI:324"), "kl_estimator": ("k1", "CLI:336-344 (k3 off)"),
    "clip": (0.2, "CLI:317"), "value_clip": (0.2, "CLI:318"), "grad_clip": (1.0, "CLI:314"),
    "reward_clip": (10.0, "CLI:347"), "advantage": ("gae", "CLI:350-356"),
    "exceed_margin": (16, "reward/common.py:9"),
    "warmup": (0.03, "trainer/ray/ppo_actor.py:281"), "min_lr_ratio": (0.1, "trainer/ray/ppo_actor.py:283"),
    "loss_agg": ("seq-mean-token-mean", "--micro_train_batch_size 1 + masked_mean per row"),
    "grad_ckpt": (True, "--gradient_checkpointing in every script"),
}
# Sec. 3.1's SFT scripts (section_3.1_sft_llama3.1_8b_math_train_{qwq,qwen}_rs_n32.sh, identical but for the data)
# and the SFT CLI's defaults (openrlhf/cli/train_sft.py)
SFT_SCRIPT = {
    "model": ("llama-3.1-8b", "10 --pretrain meta-llama/Meta-Llama-3.1-8B"), "batch_size": (256, "13"),
    "micro_batch_size": (1, "13"), "lr": (5e-6, "14"), "epochs": (2.0, "14"), "grad_ckpt": (True, "15"),
    "warmup": (0.03, "train_sft.py:98"), "min_lr_ratio": (0.1, "train_sft.py:100"),
    "grad_clip": (1.0, "train_sft.py:151"), "weight_decay": (0.0, "train_sft.py:172"),
}
SFT_DEPARTURES = {"max_len": 16384}  # theirs 128K (line 12): 16,384 holds a 2,048-token prompt + 14,336 tokens


def readme_rows():
    """(section, command, script column) of every row of README.md's experiments table."""
    text = (ROOT / "README.md").read_text()
    body = text.split("## The paper's experiments", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) == 4 and cells[0] != "section":
            rows.append(tuple(cells))
    return rows


def argv_of(command):
    """The script and its arguments from `torchrun ... SCRIPT ARGS`, $(...) replaced by a word."""
    words = shlex.split(re.sub(r"\$\([^)]*\)", "N", command.strip("`")))
    i = next(i for i, w in enumerate(words) if w.endswith(".py"))
    assert words[:i] == ["torchrun", "--standalone", "--nproc_per_node", "8"], words[:i]
    return words[i], words[i + 1:]


def scripts_of(cell):
    return re.findall(r"`(section_[^`]+\.sh)`", cell)


def check(args, table, where):
    for field, (want, line) in table.items():
        if field == "classic":  # ppo.py takes the classic reward's values from RewardConfig's defaults
            cfg = RW.RewardConfig()
            got = (cfg.classic_correct, cfg.classic_wrong, cfg.classic_exceed)
        elif field == "cosine":
            got, want = tuple(float(v) for v in args.cosine.split(",")), tuple(float(v) for v in want.split(","))
        else:
            got = getattr(args, field)
        assert got == want, f"{where}: {field} = {got!r}, the script has {want!r} ({line})"


ROWS = readme_rows()


def test_the_table_has_every_experiment_of_the_paper():
    sections = [r[0] for r in ROWS]
    for s in ("3.1", "3.2", "3.3", "4.1", "4.2", "4.3", "4.4", "4.5", "4.6", "5.1", "5.2", "6"):
        assert s in sections, s
    named = [s for r in ROWS for s in scripts_of(r[3])]
    released = set(SCRIPTS) | {"section_3.1_sft_llama3.1_8b_math_train_qwq_rs_n32.sh",
                               "section_3.1_sft_llama3.1_8b_math_train_qwen_rs_n32.sh"}
    assert sorted(set(named)) == sorted(released)  # every released script has its row, and no row a made-up one
    assert len(ROWS) == 30


@pytest.mark.parametrize("section, what, command, script", ROWS, ids=[f"{r[0]} {r[1][:40]}" for r in ROWS])
def test_row_command_reaches_its_script_settings(section, what, command, script):
    """Every command parses; a ppo.py row has its script's values, field by field, and the CLI's for the rest; a
    row without a script has the Sec. 4.2 recipe (PAPER); an SFT row has Sec. 3.1's SFT settings."""
    if not command.startswith("`"):
        assert section == "3.3" and "not runnable" in command  # the one experiment without a command
        return
    name, argv = argv_of(command)
    if name == "sft.py":
        args = sft.parse_args(argv)
        check(args, SFT_SCRIPT, f"{section} {what}")
        for field, value in SFT_DEPARTURES.items():
            assert getattr(args, field) == value
        return
    assert name == "ppo.py"
    args = ppo.parse_args(argv)
    check(args, CLI_DEFAULTS, f"{section} {what}")
    scripts = scripts_of(script)
    if scripts:
        check(args, SCRIPTS[scripts[0]], f"{section} {what} vs {scripts[0]}")
    else:
        assert "none released" in script and args.preset == "paper"
        check(args, SCRIPTS["section_4.2__active_scaling_of_cot_length__cosine_repetition_penalty.sh"], section)
    assert args.judge_model or args.verifier == "rule"


def test_presets_differ_from_paper_only_where_their_script_does():
    """A preset changes only fields its script changes from the Sec. 4.2 script (plus the data of 5.2)."""
    s42 = SCRIPTS["section_4.2__active_scaling_of_cot_length__cosine_repetition_penalty.sh"]
    for name, script in (("4.1", "section_4.1__cot_length_stability__llama_classic.sh"),
                         ("4.3", "section_4.3__cosine_hyperparameters__reward_B.sh"),
                         ("4.4", "section_4.4__context_window_size__16k.sh"),
                         ("4.6", "section_4.6__optimal_discount_factors__gammas_100_99.sh"),
                         ("5.2", "section_5.2__scaling_up_rl_with_noisy_verifiable_data__judge_filtered.sh")):
        changed = {k for k, v in ppo.PRESETS[name].items() if ppo.PAPER.get(k, ppo.COMMON.get(k)) != v}
        differs = {k for k in SCRIPTS[script] if k in s42 and SCRIPTS[script][k][0] != s42[k][0]}
        assert changed - {"prompts"} <= differs | {"classic"}, (name, changed, differs)
