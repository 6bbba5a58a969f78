"""model.py against Hugging Face transformers on tiny random models built offline from configs."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

import model as M
from longcot_kernels.logprobs import linear_logprobs, linear_logprobs_ref

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-6)


def hf_config(arch, tied):
    if arch == "qwen2":
        return transformers.Qwen2Config(**SMALL, tie_word_embeddings=tied, rope_theta=1000.0)
    # Llama 3.1 rope scaling, scaled down so that all three frequency bands occur at head_dim 16
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    return transformers.LlamaConfig(**SMALL, tie_word_embeddings=tied, rope_theta=500000.0, rope_scaling=scaling)


def make_hf(tmp_path, arch, tied, seed=0):
    torch.manual_seed(seed)
    cls = transformers.Qwen2ForCausalLM if arch == "qwen2" else transformers.LlamaForCausalLM
    hf = cls(hf_config(arch, tied)).eval()
    with torch.no_grad():  # HF inits biases to zero; make them non-zero so qkv bias is really tested
        for n, p in hf.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    d = str(tmp_path / f"{arch}-{tied}")
    hf.save_pretrained(d)
    M.tiny_tokenizer().save_pretrained(d)
    return hf, d


def right_padded_batch(vocab=99, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # row 0: 4 pads on the right
    mask[2, 10:] = 0
    ids[mask == 0] = 0
    return ids, mask


CASES = [("qwen2", True), ("qwen2", False), ("llama", False)]


@pytest.mark.parametrize("arch,tied", CASES)
def test_logits_match_transformers_right_padded(tmp_path, arch, tied):
    hf, d = make_hf(tmp_path, arch, tied)
    ours, tok = M.load(d)
    assert ours.cfg.arch == arch and ours.cfg.tie_word_embeddings == tied
    ids, mask = right_padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, return_logits=True).logits  # no mask: right padding cannot reach the real tokens
    real = mask.bool()
    assert (got[real] - ref[real]).abs().max() < 1e-4
    with torch.no_grad():  # each row alone, unpadded: the same logits
        for b in range(3):
            n = int(mask[b].sum())
            alone = ours(ids[b:b + 1, :n], return_logits=True).logits[0]
            assert (alone - got[b, :n]).abs().max() < 1e-5


def test_padded_forward_builds_no_mask_and_refuses_left_padding(monkeypatch):
    """A (B, 1, T, T) mask forces SDPA's math path (~30 GB per row per layer at 16K tokens): the training and
    scoring forwards must call attention causally with no mask, padded batch or not."""
    m, _ = M.load("tiny")
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((attn_mask, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    ids, mask = right_padded_batch(vocab=99)
    with torch.no_grad():
        m(ids, attention_mask=mask, labels=ids, return_values=False)
    assert calls and all(am is None and causal for am, causal in calls)
    with pytest.raises(ValueError, match="left padding"):
        m(ids, attention_mask=mask.flip(1), labels=ids)


def test_llama3_rope_scaling_changes_frequencies():
    cfg = M.Config(head_dim=16, rope_theta=500000.0)
    base = M.rope_inv_freq(cfg)
    cfg.rope_scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64}
    scaled = M.rope_inv_freq(cfg)
    assert torch.equal(scaled[0], base[0])  # the fastest frequency is kept
    assert torch.allclose(scaled[-1], base[-1] / 8)  # the slowest is divided by the factor


@pytest.mark.parametrize("arch,tied", [("qwen2", True), ("llama", False)])
def test_save_load_round_trip_through_transformers(tmp_path, arch, tied):
    _, d = make_hf(tmp_path, arch, tied)
    ours, tok = M.load(d)
    out = str(tmp_path / "saved")
    M.save(ours, tok, out)
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ours2, tok2 = M.load(out)
    ids, mask = right_padded_batch()
    with torch.no_grad():
        a = ours(ids, return_logits=True).logits
        b = back(input_ids=ids, attention_mask=mask).logits
        c = ours2(ids, return_logits=True).logits
    real = mask.bool()
    assert (a[real] - b[real]).abs().max() < 1e-4
    assert torch.equal(a, c)
    text = "Add right to left.\n 12+3 = \\boxed{15}"
    assert tok2.encode(text) == tok.encode(text) and tok2.decode(tok2.encode(text)) == text


def test_sharded_save_and_bf16_load(tmp_path):
    m, tok = M.load("tiny")
    M.save(m, tok, str(tmp_path), shard_bytes=400_000)  # forces several shards + index
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    m2, _ = M.load(str(tmp_path), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in m2.parameters())
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16), b), k
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    ids = torch.tensor([tok.encode("What is 12+34?")])
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - m(ids, return_logits=True).logits).abs().max() < 1e-4


def test_value_head_saved_and_reloaded(tmp_path):
    m, tok = M.load("tiny", value_head=True)
    with torch.no_grad():
        m.value_head.weight.normal_()
    M.save(m, tok, str(tmp_path))
    m2, _ = M.load(str(tmp_path), value_head=True)
    ids = torch.tensor([tok.encode("1+1=2")])
    with torch.no_grad():
        assert torch.allclose(m(ids, return_values=True).values, m2(ids, return_values=True).values)
    with pytest.raises(ValueError, match="value_head"):
        M.load("tiny")[0](ids, return_values=True)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_equal_naive_log_softmax(temperature):
    torch.manual_seed(0)
    h = torch.randn(37, 24, dtype=torch.float64, requires_grad=True)
    w = torch.randn(101, 24, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 101, (37,))
    lp, ent = linear_logprobs(h, w, t, temperature, chunk=8)  # 5 chunks, the last one partial
    naive = F.log_softmax((h @ w.t()) / temperature, -1).gather(-1, t[:, None]).squeeze(-1)
    assert torch.allclose(lp.double(), naive, atol=1e-5)
    ref_lp, ref_ent = linear_logprobs_ref(h, w, t, temperature)
    assert torch.allclose(ent.double(), ref_ent.double(), atol=1e-5)
    g = torch.randn(37, dtype=torch.float64)
    gh, gw = torch.autograd.grad((lp.double() * g).sum(), (h, w))
    rh, rw = torch.autograd.grad((naive * g).sum(), (h, w))
    assert torch.allclose(gh, rh, atol=1e-5) and torch.allclose(gw, rw, atol=1e-5)


def test_model_logprobs_equal_full_logits():
    m, tok = M.load("tiny")
    ids, mask = right_padded_batch(vocab=99)
    labels = torch.roll(ids, -1, 1)
    out = m(ids, labels=labels, temperature=0.7, return_logits=True)
    naive = F.log_softmax(out.logits.float() / 0.7, -1).gather(-1, labels[..., None]).squeeze(-1)
    assert torch.allclose(out.logprobs, naive, atol=1e-5)
    assert out.entropy.shape == (3, 11) and (out.entropy > 0).all()


def test_gradient_checkpointing_same_gradients():
    m, tok = M.load("tiny")
    ids, mask = right_padded_batch(vocab=99)
    labels = torch.roll(ids, -1, 1)
    grads = []
    for flag in (False, True):
        m.zero_grad()
        m.gradient_checkpointing = flag
        m(ids, labels=labels).logprobs.sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_kv_cache_prefill_and_decode_match_full_forward():
    m, tok = M.load("tiny")
    prompts = [tok.encode("12+345="), tok.encode("7*8=")]
    T = max(map(len, prompts))
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, p in enumerate(prompts):  # right padding, as the sampler prefills
        ids[i, :len(p)], mask[i, :len(p)] = torch.tensor(p), 1
    cache = M.KVCache(m.cfg, batch=3, capacity=32, dtype=torch.float32, device="cpu")
    slots = torch.tensor([2, 0])  # slots need not be in order
    nxt = torch.tensor([[5], [9]])
    with torch.no_grad():
        first = m(ids, attention_mask=mask, cache=cache, slots=slots).logits  # (2, V)
        assert cache.lengths.tolist() == [len(prompts[1]), 0, len(prompts[0])]
        step = torch.zeros(3, 1, dtype=torch.long)
        step[2], step[0] = nxt[0], nxt[1]
        second = m(step, cache=cache).logits  # (3, V)
        for i, p in enumerate(prompts):
            full = m(torch.tensor([p + nxt[i].tolist()]), return_logits=True).logits[0]
            assert torch.allclose(first[i], full[-2], atol=1e-5)
            assert torch.allclose(second[slots[i]], full[-1], atol=1e-5)


def test_bad_checkpoint_directory_errors(tmp_path):
    with pytest.raises(ValueError, match="known alias"):
        M.load("qwen-math-9000b")
    with pytest.raises(FileNotFoundError, match="config.json"):
        M.load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "qwen2",\n "vocab_size": }')
    with pytest.raises(ValueError, match=r"config.json:2: invalid JSON"):
        M.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="gpt2"):
        M.load(str(tmp_path))
    cfg = M.TINY.to_hf()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        M.load(str(tmp_path))
    m, tok = M.load("tiny")
    M.save(m, tok, str(tmp_path / "ok"))
    cfg2 = dict(cfg, hidden_size=64, head_dim=16)  # config disagrees with the weights
    (tmp_path / "ok" / "config.json").write_text(json.dumps(cfg2))
    with pytest.raises(ValueError, match="has shape"):
        M.load(str(tmp_path / "ok"))
    from safetensors.torch import load_file, save_file
    sd = load_file(str(tmp_path / "ok" / "model.safetensors"))
    sd.pop("model.norm.weight")
    save_file(sd, str(tmp_path / "ok" / "model.safetensors"))
    (tmp_path / "ok" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model.norm.weight"):
        M.load(str(tmp_path / "ok"))


def test_triton_backend_same_logits_and_gradients():
    """The model through the Triton kernels (interpreter on CPU) equals the torch references, and training
    forwards (autograd needed) fall back to the references, so every parameter still gets its gradient."""
    import longcot_kernels
    m, tok = M.load("tiny")
    ids = torch.tensor([tok.encode("12+345=57"), tok.encode("99+1=100!")])
    with torch.no_grad():
        ref = m(ids, return_logits=True).logits
        with longcot_kernels.use("triton"):
            got = m(ids, return_logits=True).logits
    assert (got - ref).abs().max() < 1e-4
    grads = []
    for name in ("torch", "triton"):
        m.zero_grad()
        with longcot_kernels.use(name):
            m(ids, labels=torch.roll(ids, -1, 1)).logprobs.sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert len(grads[1]) == len(list(m.parameters())) and grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_rope_theta_override_reaches_the_loaded_model(tmp_path):
    """--rope-theta: model.load (and dist.load_sharded, which ppo.py uses) build the model with the new theta: its
    rope tables are cos/sin(position x theta^(-2i/d)) for that theta, its forward changes, its position limit is
    raised, and a save keeps both (config.json), so the next load of the checkpoint needs no flag. Caught
    mutations: the override dropped in load or in load_sharded, the tables left at the config's theta."""
    import dist
    ids = torch.tensor([[5, 9, 12, 30, 7, 44, 3, 8]])
    base, tok = M.load("tiny")
    net, _ = M.load("tiny", rope_theta=1e6, max_positions=8192)
    assert base.cfg.rope_theta == 10000.0 and net.cfg.rope_theta == 1e6 and net.cfg.max_position_embeddings == 8192
    d = net.cfg.head_dim
    angles = torch.arange(8.0)[:, None] / (1e6 ** (torch.arange(0, d, 2).float() / d))[None, :]  # (P, d/2)
    cos, sin = net.rope_tables(8, "cpu")
    assert torch.allclose(cos[:8], angles.cos(), atol=1e-6) and torch.allclose(sin[:8], angles.sin(), atol=1e-6)
    with torch.no_grad():  # same weights (seed 0), other theta: other logits past position 0
        a, b = base(ids, return_logits=True).logits, net(ids, return_logits=True).logits
    assert torch.allclose(a[0, 0], b[0, 0], atol=1e-6) and not torch.allclose(a[0, 1:], b[0, 1:], atol=1e-4)
    sharded, _ = dist.load_sharded("tiny", torch.float32, "cpu", rope_theta=1e6, max_positions=8192)
    assert sharded.cfg.rope_theta == 1e6 and torch.equal(sharded.rope_tables(8, "cpu")[0][:8], cos[:8])
    M.save(net, tok, str(tmp_path / "ckpt"))
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["rope_theta"] == 1e6 and saved["max_position_embeddings"] == 8192
    again, _ = M.load(str(tmp_path / "ckpt"))
    assert again.cfg.rope_theta == 1e6
    raised, _ = M.load(str(tmp_path / "ckpt"), rope_theta=5e5, max_positions=64)  # never lowers the limit
    assert raised.cfg.rope_theta == 5e5 and raised.cfg.max_position_embeddings == 8192
    cfg = M.config_for("qwen-math-7b", **M.LONG_CONTEXT["qwen-math-7b"])  # the paper preset's start
    assert (cfg.rope_theta, cfg.max_position_embeddings) == (40000.0, 16384)
    assert M.config_for("qwen-math-7b").rope_theta == 10000.0  # the checkpoint's own without it
    with pytest.raises(ValueError, match="rope_theta"):
        M.load("tiny", rope_theta=-1.0)


def test_ppo_takes_the_long_context_theta_for_qwen_math_7b():
    import ppo
    assert ppo.parse_args(["--model", "qwen-math-7b"]).rope_theta == M.LONG_CONTEXT["qwen-math-7b"]["rope_theta"]
    assert ppo.parse_args(["--model", "qwen-math-7b", "--rope-theta", "0"]).rope_theta is None  # the checkpoint's
    assert ppo.parse_args(["--model", "qwen-math-7b", "--rope-theta", "1e5"]).rope_theta == 1e5
    assert ppo.parse_args(["--model", "llama-3.1-8b"]).rope_theta is None
    assert ppo.parse_args([]).rope_theta is None  # tiny
