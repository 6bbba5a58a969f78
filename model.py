"""The one model wrapper: a decoder-only transformer for the Llama and Qwen2 families.

Everything in longcot (sampler, SFT, PPO policy/reference/critic, eval) uses this file:

    model, tok = load("qwen-math-7b", dtype=torch.bfloat16, device="cuda")  # alias, HF dir, hub id, or "tiny"
    out = model(ids, attention_mask=mask, labels=targets, temperature=0.7)  # out.logprobs (B, T)
    save(model, tok, "ckpt/")                                              # HF format

Architecture (Llama-3.1 / Qwen2.5): RMSNorm, rotary position embedding (with Llama-3 rope scaling),
grouped-query attention (Qwen2: bias on q/k/v), SwiGLU MLP, tied or untied output embedding. Parameter
names equal Hugging Face's, so checkpoints load with no renaming and `transformers` loads ours back.

One forward serves every caller (FSDP2 only gathers weights on `module(...)` calls, so there is no second
public method that touches weights):
  - logits for a left- or right-padded batch (`return_logits=True`);
  - per-token log-probs of given labels at a temperature, in chunks (longcot_kernels/logprobs.py), never a full
    (B, T, V) fp32 tensor (`labels=...`);
  - scalar values from an optional value head, for the PPO critic (`return_values=True`);
  - the KV-cache hooks of the sampler: prefill rows of a `KVCache` (`cache=..., slots=...`) and the
    one-token decode step (`cache=...`), which runs the Triton kernels through `longcot_kernels` on a GPU.

Run `python model.py` to build the tiny model and print its size and a few greedy tokens.
Distributed helpers (torchrun, FSDP2) are in dist.py. Departures from the paper: none (the paper uses
OpenRLHF's Hugging Face models; this is a from-scratch equivalent).
"""
import json
import math
import os
from dataclasses import dataclass, asdict, fields, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch.utils.checkpoint import checkpoint

import longcot_kernels
from longcot_kernels.logprobs import linear_logprobs

ALIASES = {
    "qwen-math-7b": "Qwen/Qwen2.5-Math-7B",
    "qwen-math-1.5b": "Qwen/Qwen2.5-Math-1.5B",
    "qwen-math-7b-instruct": "Qwen/Qwen2.5-Math-7B-Instruct",  # ppo.py --verifier judge --judge-model
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "qwen-7b": "Qwen/Qwen2.5-7B",
    "qwen-1.5b": "Qwen/Qwen2.5-1.5B",
    "tiny": "(built in: a ~1M-parameter Qwen2-style model and a character tokenizer, no download)",
}


# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------
@dataclass
class Config:
    arch: str = "qwen2"  # "qwen2" | "llama": selects the HF class names written to config.json
    vocab_size: int = 128
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None  # None, {"rope_type": "linear", ...} or {"rope_type": "llama3", ...}
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    qkv_bias: bool = True  # Qwen2: bias on q/k/v projections
    o_bias: bool = False  # Llama's attention_bias=True also puts a bias on o_proj
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None  # int or list of ints in HF configs; we keep the first

    @staticmethod
    def from_hf(d: dict, where: str = "config.json") -> "Config":
        """Read a Hugging Face config dict (transformers 4.x `rope_theta`/`rope_scaling` or 5.x `rope_parameters`)."""
        mt = d.get("model_type")
        if mt not in ("qwen2", "llama"):
            raise ValueError(f"{where}: model_type {mt!r} is not supported (expected 'qwen2' or 'llama')")
        try:
            rope = dict(d.get("rope_parameters") or {})
            theta = rope.pop("rope_theta", None) or d.get("rope_theta", 10000.0)
            scaling = d.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
            if scaling is not None:
                scaling = dict(scaling)
                scaling.setdefault("rope_type", scaling.get("type"))
            eos = d.get("eos_token_id")
            n_heads = d["num_attention_heads"]
            attn_bias = bool(d.get("attention_bias", False))
            return Config(
                arch=mt, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                intermediate_size=d["intermediate_size"], num_layers=d["num_hidden_layers"], num_heads=n_heads,
                num_kv_heads=d.get("num_key_value_heads") or n_heads,
                head_dim=d.get("head_dim") or d["hidden_size"] // n_heads,
                rms_norm_eps=d.get("rms_norm_eps", 1e-6), rope_theta=float(theta), rope_scaling=scaling,
                max_position_embeddings=d.get("max_position_embeddings", 4096),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                qkv_bias=(mt == "qwen2") or attn_bias, o_bias=(mt == "llama") and attn_bias,
                bos_token_id=d.get("bos_token_id"), eos_token_id=eos[0] if isinstance(eos, list) else eos,
            )
        except KeyError as e:
            raise ValueError(f"{where}: missing key {e.args[0]!r} (expected a Llama/Qwen2 config)") from None

    def to_hf(self) -> dict:
        cls = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[self.arch]
        d = {
            "architectures": [cls], "model_type": self.arch, "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim, "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta, "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
        }
        if self.arch == "llama":
            d.update(attention_bias=self.o_bias, mlp_bias=False)
        return d


TINY = Config()  # the classroom model: 4 layers, width 128, ~0.9M parameters

# The aliases' Hugging Face config.json, the fields that shape the model, so that a model can be built (e.g. by
# plan.py, the memory plan) with no download. Checked against copies of the published config.json files:
# Llama-3.1-8B and Qwen2.5-7B: github.com/citsjtu2020/LLM-Prof sglang/Model_Config.md; Qwen2.5-Math-7B (4096
# positions, theta 1e4): huggingface/open-r1#469, deepseek-ai/DeepSeek-R1#458 (shapes), QwenLM/Qwen2.5-Math#59;
# Qwen2.5-Math-1.5B (4096 positions): GAIR-NLP/ToRL#23; 1.5B shapes (1536/8960/28/12/2, tied): InternLM/lmdeploy#1782.
_QWEN = dict(model_type="qwen2", rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151643, num_hidden_layers=28)
_QWEN_7B = dict(_QWEN, hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                vocab_size=152064, tie_word_embeddings=False)
_QWEN_1_5B = dict(_QWEN, hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                  vocab_size=151936, tie_word_embeddings=True)
ALIAS_CONFIGS = {
    "qwen-math-7b": dict(_QWEN_7B, rope_theta=10000.0, max_position_embeddings=4096),
    "qwen-math-1.5b": dict(_QWEN_1_5B, rope_theta=10000.0, max_position_embeddings=4096),
    "qwen-math-7b-instruct": dict(_QWEN_7B, rope_theta=10000.0, max_position_embeddings=4096),  # same shapes as 7B
    "qwen-7b": dict(_QWEN_7B, rope_theta=1000000.0, max_position_embeddings=131072),
    "qwen-1.5b": dict(_QWEN_1_5B, rope_theta=1000000.0, max_position_embeddings=131072),
    "llama-3.1-8b": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        max_position_embeddings=131072, tie_word_embeddings=False, attention_bias=False,
        bos_token_id=128000, eos_token_id=128001),
}


# Context extension for a start model whose config stops short of the paper's 2,048 + 14,336 tokens: Qwen2.5-Math-7B
# has 4,096 positions at RoPE theta 10,000. ppo.py, sft.py and eval.py apply it by default to this alias (their
# --rope-theta overrides it; 0 keeps the checkpoint's). The paper raised the theta for its Qwen2.5-Math-7B runs;
# its appendix could not be read from this project's machines, so the value below is not the paper's but the
# NTK-aware base for a 4x longer window (10,000 x 4^(128/126) = 40,900, head_dim 128), rounded as the public
# recipes that train this model at 16K tokens set it (40,000 with 16,384 positions: TsinghuaC3I/Unify-Post-Training
# issue #5, "following LUFFY").
LONG_CONTEXT = {"qwen-math-7b": dict(rope_theta=40000.0, max_positions=16384)}


def with_context(cfg: Config, rope_theta: Optional[float] = None, max_positions: Optional[int] = None) -> Config:
    """A copy of cfg with another RoPE theta and at least `max_positions` positions (None: unchanged). A larger theta
    stretches every rotary wavelength, so positions past the pretraining window stay distinguishable; the position
    limit only travels into the saved config.json (this model computes its rope tables for any length)."""
    changes = {}
    if rope_theta is not None:
        if not rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {rope_theta}")
        changes["rope_theta"] = float(rope_theta)
    if max_positions is not None:
        changes["max_position_embeddings"] = max(cfg.max_position_embeddings, int(max_positions))
    return replace(cfg, **changes)


def config_for(name_or_path: str, rope_theta: Optional[float] = None, max_positions: Optional[int] = None) -> Config:
    """The Config of an alias (offline, from ALIAS_CONFIGS), "tiny", or a local Hugging Face directory (its
    config.json), with with_context's changes. Reads no weights and downloads nothing."""
    if name_or_path == "tiny":
        return with_context(Config(**asdict(TINY)), rope_theta, max_positions)
    if name_or_path in ALIAS_CONFIGS:
        cfg = Config.from_hf(ALIAS_CONFIGS[name_or_path], f"model.ALIAS_CONFIGS[{name_or_path!r}]")
        return with_context(cfg, rope_theta, max_positions)
    cfg_path = os.path.join(name_or_path, "config.json")
    if not os.path.exists(cfg_path):
        raise ValueError(f"{name_or_path!r}: not an alias ({', '.join(ALIAS_CONFIGS)}, tiny) nor a directory with a "
                         f"config.json")
    return with_context(Config.from_hf(_read_json(cfg_path), cfg_path), rope_theta, max_positions)


# ----------------------------------------------------------------------------------------------------
# Rotary position embedding
# ----------------------------------------------------------------------------------------------------
def rope_inv_freq(cfg: Config) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,), with the checkpoint's rope scaling. RoFormer, Su et al. 2021."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # theta^(-2i/d)
    sc = cfg.rope_scaling
    kind = (sc or {}).get("rope_type") or "default"
    if kind == "default":
        return inv
    if kind == "linear":  # positions divided by factor == frequencies divided by factor
        return inv / sc["factor"]
    if kind == "llama3":  # Llama 3.1: slow frequencies scaled by 1/factor, fast ones kept, smooth in between
        factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old_len = sc["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / lo, inv / factor, inv)
        smooth = (old_len / wavelen - lo) / (hi - lo)
        mid = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
        return torch.where(mid, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    raise ValueError(f"rope_scaling type {kind!r} is not supported (expected default, linear or llama3)")


# ----------------------------------------------------------------------------------------------------
# KV cache (used by sample.py)
# ----------------------------------------------------------------------------------------------------
class KVCache:
    """Preallocated keys/values for `batch` rows of up to `capacity` tokens, and each row's length.

    k[layer], v[layer]: (batch, n_kv_heads, capacity, head_dim). lengths[b] = tokens stored in row b.
    Rows are slots: sample.py refills a finished slot with a waiting prompt (continuous batching)."""

    def __init__(self, cfg: Config, batch: int, capacity: int, dtype, device):
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, capacity, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.capacity = capacity


# ----------------------------------------------------------------------------------------------------
# The transformer
# ----------------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return longcot_kernels.rms_norm(x, self.weight, self.eps)  # x / rms(x) * w  (Zhang & Sennrich 2019)


class Attention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        H, K, Dh, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size
        self.q_proj = nn.Linear(D, H * Dh, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(D, K * Dh, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(D, K * Dh, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(H * Dh, D, bias=cfg.o_bias)

    def forward(self, x, positions, rope, cache=None, layer=0, slots=None):
        B, T, _ = x.shape
        H, K, Dh = self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim
        q = self.q_proj(x).view(B, T, H, Dh)
        k = self.k_proj(x).view(B, T, K, Dh)
        v = self.v_proj(x).view(B, T, K, Dh)
        q, k = longcot_kernels.apply_rope(q, k, positions, *rope)  # (B, T, H|K, Dh)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|K, T, Dh)
        if cache is not None and slots is None:  # decode: one new token per cache row
            rows = torch.arange(B, device=x.device)
            cache.k[layer, rows, :, cache.lengths] = k[:, :, 0]
            cache.v[layer, rows, :, cache.lengths] = v[:, :, 0]
            o = longcot_kernels.decode_attention(q[:, :, 0], cache.k[layer], cache.v[layer], cache.lengths + 1,
                                         max_len=cache.capacity)  # static bound: no GPU->CPU sync
            o = o[:, None]  # (B, 1, H, Dh)
        else:
            if cache is not None:  # prefill: rows `slots` of the cache get this right-padded prompt batch
                cache.k[layer, slots, :, :T] = k
                cache.v[layer, slots, :, :T] = v
            # softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017), causal, no mask (rows are right-padded);
            # GQA shares each k/v head among H/K q heads
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=H != K).transpose(1, 2)
        return self.o_proj(o.reshape(B, T, H * Dh))


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        D, I = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(D, I, bias=False)
        self.up_proj = nn.Linear(D, I, bias=False)
        self.down_proj = nn.Linear(I, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU (Shazeer 2020)


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, positions, rope, cache=None, layer=0, slots=None):
        x = x + self.self_attn(self.input_layernorm(x), positions, rope, cache, layer, slots)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


@dataclass
class Output:
    hidden: torch.Tensor  # (B, T, D) final-norm hidden states
    logits: Optional[torch.Tensor] = None  # (B, T, V), or (B, V) for the cache paths
    logprobs: Optional[torch.Tensor] = None  # (B, T) fp32 log p(labels[:, t] | tokens <= t) at temperature
    entropy: Optional[torch.Tensor] = None  # (B, T) fp32 entropy of the tempered distribution (no grad)
    values: Optional[torch.Tensor] = None  # (B, T) fp32 value head


# FSDP2 on torch <= 2.12 attaches its "re-gather the weights before backward" hook only to the tensors it finds
# by pytree-flattening a module's output, and a plain dataclass is one opaque leaf there: registering Output's
# fields as its children lets FSDP2 (and anything else that walks outputs with pytree) see the tensors inside.
pytree.register_pytree_node(
    Output, lambda o: ([getattr(o, f.name) for f in fields(Output)], None),
    lambda children, _: Output(*children), serialized_type_name="longcot.model.Output")


class CausalLM(nn.Module):
    """`model.*` and `lm_head` mirror Hugging Face's Qwen2ForCausalLM / LlamaForCausalLM parameter names."""

    def __init__(self, cfg: Config, value_head: bool = False):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.value_head = nn.Linear(cfg.hidden_size, 1) if value_head else None
        self.gradient_checkpointing = False  # recompute each block in backward: memory for ~30% more compute
        self.logprob_chunk = 1024  # rows of (chunk, V) logits alive at once in the log-prob path
        self._rope = None  # (cos, sin) tables (P, head_dim/2) fp32, grown on demand

    def to_empty(self, *, device, recurse=True):
        """nn.Module.to_empty gives each module its own new tensor, which unties lm_head from the embeddings: tie
        them again (a model built on the meta device, then given storage: sample.decode_copy, plan.py)."""
        super().to_empty(device=device, recurse=recurse)
        if self.cfg.tie_word_embeddings and self.lm_head.weight is not self.model.embed_tokens.weight:
            self.lm_head.weight = self.model.embed_tokens.weight
        return self

    def rope_tables(self, n_pos, device):
        if self._rope is None or self._rope[0].shape[0] < n_pos or self._rope[0].device != torch.device(device):
            n = max(n_pos, min(self.cfg.max_position_embeddings, 32768))
            freqs = torch.outer(torch.arange(n, dtype=torch.float32), rope_inv_freq(self.cfg)).to(device)
            self._rope = (freqs.cos(), freqs.sin())  # (P, Dh/2) fp32, as Hugging Face computes them
        return self._rope

    def forward(self, input_ids, attention_mask=None, position_ids=None, *, labels=None, temperature=1.0,
                return_logits=False, return_values=False, cache: Optional[KVCache] = None, slots=None):
        """input_ids (B, T): each row's tokens from column 0, RIGHT-padded. Attention is plain causal with no
        mask: a real token only attends to earlier columns, so right padding can never affect it (what the pad
        columns compute is garbage that callers ignore). No (B, T, T) mask is ever built: SDPA keeps its fused
        (flash) kernel, which a mask or a left-padded layout would rule out.
        attention_mask (B, T) 1 = token, 0 = right padding: only read by the prefill path (each row's last token);
        a left-padded mask is an error. labels (B, T): the token to score at each position (already shifted; any
        value where ignored). cache without slots: decode step, input_ids (B, 1) for every cache row, returns
        logits (B, V). cache with slots (n,): prefill cache rows `slots` with a right-padded batch, returns last
        logits (n, V)."""
        B, T = input_ids.shape
        decode = cache is not None and slots is None
        if decode:
            position_ids = cache.lengths[:, None]  # (B, 1): the new token sits after the stored ones
        elif position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)  # every row starts at column 0
        if attention_mask is not None and not decode and T > 1 and \
                bool((attention_mask[:, 1:].long() > attention_mask[:, :-1].long()).any()):
            raise ValueError("attention_mask has left padding: rows must start at column 0 (right padding only)")
        n_pos = cache.capacity if cache is not None else T
        rope = self.rope_tables(n_pos, input_ids.device)

        x = self.model.embed_tokens(input_ids)
        for i, block in enumerate(self.model.layers):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, position_ids, rope, use_reentrant=False)
            else:
                x = block(x, position_ids, rope, cache, i, slots)
        h = self.model.norm(x)  # (B, T, D)

        out = Output(hidden=h)
        if cache is not None:
            if slots is not None:
                last = (attention_mask.long().sum(-1) - 1) if attention_mask is not None else \
                    torch.full((B,), T - 1, device=h.device)
                cache.lengths[slots] = last + 1
                h = h[torch.arange(B, device=h.device), last]  # (n, D) last real token of each prompt
            else:
                h = h[:, 0]  # (B, D)
            out.logits = self.lm_head(h)
            return out
        if return_logits:
            out.logits = self.lm_head(h)  # (B, T, V)
        if labels is not None:
            lp, ent = linear_logprobs(h.reshape(B * T, -1), self.lm_head.weight, labels.reshape(B * T),
                                      temperature, self.logprob_chunk)
            out.logprobs, out.entropy = lp.view(B, T), ent.view(B, T)
        if return_values:
            if self.value_head is None:
                raise ValueError("return_values=True needs a model built with value_head=True (the critic)")
            out.values = self.value_head(h).squeeze(-1).float()  # (B, T)
        return out

    def num_params(self):
        return sum(p.numel() for p in self.parameters())


def init_weights(model: CausalLM, std: float = 0.02, seed: int = 0):
    """Random init like Hugging Face's (normal(0, std) weights, zero biases, unit norms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


# ----------------------------------------------------------------------------------------------------
# The built-in tiny tokenizer: one token per printable ASCII character
# ----------------------------------------------------------------------------------------------------
TINY_SPECIAL = ["<|pad|>", "<|endoftext|>", "<|unk|>"]


def tiny_tokenizer():
    """A character-level tokenizer built offline with the `tokenizers` library (no download).
    Vocabulary: 3 special tokens + "\\n" + the 95 printable ASCII characters = 99 ids (embedding has 128)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {t: i for i, t in enumerate(TINY_SPECIAL + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char a piece
    tok.decoder = decoders.Fuse()  # join pieces with no separator
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                   unk_token="<|unk|>", clean_up_tokenization_spaces=False)


# ----------------------------------------------------------------------------------------------------
# Load and save (Hugging Face format)
# ----------------------------------------------------------------------------------------------------
def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def _weight_files(path):
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        shards = sorted(set(_read_json(index)["weight_map"].values()))
        missing = [s for s in shards if not os.path.exists(os.path.join(path, s))]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are missing: {missing[:3]}")
        return [os.path.join(path, s) for s in shards]
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json "
                            f"(expected a Hugging Face checkpoint saved with safetensors)")


def read_weights(path, model: "CausalLM", dtype, device="cpu"):
    """Yield (name, tensor) for every parameter of `model` (built from path's config.json, e.g. on the meta
    device) from the safetensors files in `path`, one tensor at a time, cast to `dtype`; checked against the
    model's names and shapes. A value head comes from value_head.safetensors, else starts at zero."""
    from safetensors import safe_open
    expected = {k: v.shape for k, v in model.state_dict().items()}
    tied = model.cfg.tie_word_embeddings
    seen = set()
    for f in _weight_files(path):
        with safe_open(f, framework="pt", device=str(device)) as st:
            for key in st.keys():
                if key not in expected or key.startswith("value_head."):
                    if tied and key == "lm_head.weight":
                        continue
                    raise ValueError(f"{f}: unexpected tensor {key!r} for a {model.cfg.arch} model")
                t = st.get_tensor(key)
                if t.shape != expected[key]:
                    raise ValueError(f"{f}: tensor {key!r} has shape {tuple(t.shape)}, config.json implies "
                                     f"{tuple(expected[key])}")
                seen.add(key)
                yield key, t.to(dtype)
    if model.value_head is not None:  # the critic's head: saved by save(), or fresh (zero: V = 0 at the start)
        vh = os.path.join(path, "value_head.safetensors")
        from safetensors.torch import load_file
        head = load_file(vh, device=str(device)) if os.path.exists(vh) else \
            {k: torch.zeros(expected["value_head." + k], device=device) for k in ("weight", "bias")}
        for k, v in head.items():
            seen.add("value_head." + k)
            yield "value_head." + k, v.to(dtype)
    missing = sorted(set(expected) - seen - ({"lm_head.weight"} if tied else set()))
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")


def local_dir(name_or_path: str) -> str:
    """The local Hugging Face directory of an alias, a directory or a hub id (downloaded where there is internet)."""
    path = ALIASES.get(name_or_path, name_or_path)
    if not os.path.isdir(path):
        if "/" not in path or os.path.sep + "." in path or path.startswith((".", "/")):
            raise ValueError(f"{name_or_path!r} is neither a directory nor a known alias "
                             f"(known: {', '.join(ALIASES)}) nor a hub id like 'Qwen/Qwen2.5-Math-7B'")
        from huggingface_hub import snapshot_download  # needs internet
        path = snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    return path


def load(name_or_path: str, dtype=torch.float32, device="cpu", value_head=False, seed=0, rope_theta=None,
         max_positions=None):
    """Returns (model, tokenizer). name_or_path: an alias (see ALIASES), a local Hugging Face directory,
    a hub id (downloaded where there is internet), or "tiny" (random weights from `seed`, no download).
    Weights go straight from the safetensors shards into a model built on the meta device. device="meta":
    the model's structure only, no weight read (dist.load_sharded then fills each rank's shards).
    rope_theta, max_positions: replace the checkpoint's (with_context; None keeps them)."""
    if name_or_path == "tiny":
        torch_dev = torch.device(device)
        cfg = with_context(Config(**asdict(TINY)), rope_theta, max_positions)
        model = init_weights(CausalLM(cfg, value_head=value_head), seed=seed).to(torch_dev, dtype)
        tok = tiny_tokenizer()
        model.cfg.eos_token_id = tok.eos_token_id
        return model, tok
    path = local_dir(name_or_path)
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face model directory with "
                                f"config.json, *.safetensors and tokenizer files)")
    cfg = with_context(Config.from_hf(_read_json(cfg_path), cfg_path), rope_theta, max_positions)
    with torch.device("meta"):
        model = CausalLM(cfg, value_head=value_head)  # no memory: the weights are assigned straight in
    if torch.device(device).type != "meta":  # meta: the caller fills the weights (dist.load_sharded)
        sd = dict(read_weights(path, model, dtype, device))
        if cfg.tie_word_embeddings:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        model.load_state_dict(sd, strict=True, assign=True)
        if cfg.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    tok_cfg = os.path.join(path, "tokenizer_config.json")
    generic = os.path.exists(tok_cfg) and _read_json(tok_cfg).get("tokenizer_class") in (
        "TokenizersBackend", "PreTrainedTokenizerFast")
    # a generic tokenizer.json (e.g. the tiny one) must not be re-read as the model family's own class, which
    # would impose that family's pre-tokenizer (Qwen2Tokenizer drops our character splitting)
    tok = PreTrainedTokenizerFast.from_pretrained(path) if generic else AutoTokenizer.from_pretrained(path)
    if cfg.eos_token_id is None:
        cfg.eos_token_id = tok.eos_token_id
    return model, tok


def save(model: CausalLM, tokenizer, path: str, state_dict=None, shard_bytes: int = 5 << 30):
    """Write Hugging Face format (config.json, safetensors shards + index, tokenizer files) that
    `transformers.AutoModelForCausalLM.from_pretrained(path)` loads. state_dict: a gathered full state dict
    (dist.full_state_dict under FSDP); default model.state_dict(). A value head goes to value_head.safetensors."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    cfg = model.cfg
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    vh = {k[len("value_head."):]: sd.pop(k) for k in list(sd) if k.startswith("value_head.")}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # shared with embed_tokens; safetensors stores it once
    dtype = next(iter(sd.values())).dtype
    hf = cfg.to_hf()
    hf["torch_dtype"] = str(dtype).replace("torch.", "")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    shards, cur, size = [], {}, 0
    for k, v in sd.items():
        nbytes = v.numel() * v.element_size()
        if cur and size + nbytes > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = v, size + nbytes
    shards.append(cur)
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
        total = sum(v.numel() * v.element_size() for v in sd.values())
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if vh:
        save_file(vh, os.path.join(path, "value_head.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


if __name__ == "__main__":
    m, tok = load("tiny")
    print(f"tiny model: {m.num_params() / 1e6:.2f}M parameters, vocab {len(tok)}, config {asdict(m.cfg)}")
    ids = torch.tensor([tok.encode("12+34=")])
    with torch.no_grad():
        for _ in range(8):
            nxt = m(ids, return_logits=True).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    print("greedy continuation of random weights:", repr(tok.decode(ids[0])))
