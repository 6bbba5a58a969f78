"""The KV-cached, continuously batched sampler against a naive no-cache loop and transformers."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import longcot_kernels
import model as M
import sample as S

PROMPTS = ["12+345=", "7*8=", "What is 99+1?", "a"]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (bench/gpu_check.sh runs these)")


@pytest.fixture(autouse=True)
def cpu_models_use_torch_kernels(request):
    """With a GPU the default backend is "triton", which needs CUDA tensors: the CPU tests (every test not named
    test_cuda_*) run their CPU models on the torch references, as they do on a machine without a GPU."""
    if CUDA and not request.node.name.startswith("test_cuda_"):
        with longcot_kernels.use("torch"):
            yield
    else:
        yield


@pytest.fixture(scope="module")
def tiny():
    return M.load("tiny", seed=3)


def naive_greedy(model, prompt_ids, max_new, eos):
    """The reference: re-run the whole sequence every step, no cache, argmax."""
    ids = list(prompt_ids)
    out = []
    with torch.no_grad():
        for _ in range(max_new):
            x = torch.tensor([ids], device=next(model.parameters()).device)
            nxt = int(model(x, return_logits=True).logits[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if nxt in eos:
                break
    return out


def test_greedy_equals_naive_loop_with_refill(tiny):
    model, tok = tiny
    eos = S.stop_ids(model, tok)
    outs = S.generate(model, tok, PROMPTS, n=2, temperature=0.0, max_new_tokens=12, batch_size=3)  # 8 jobs, 3 slots
    for p, samples in zip(PROMPTS, outs):
        ref = naive_greedy(model, tok.encode(p), 12, eos)
        assert len(samples) == 2
        for s in samples:
            assert s.token_ids == ref
            assert s.finish_reason == ("eos" if ref[-1] in eos else "length")


def small_hf_qwen2(tmp_path):
    """A small random transformers Qwen2 model, saved with the tiny tokenizer to tmp_path."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=99, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, eos_token_id=1,
                                   pad_token_id=0, tie_word_embeddings=True)
    hf = transformers.Qwen2ForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    M.tiny_tokenizer().save_pretrained(tmp_path)
    return hf


def test_greedy_equals_transformers_generate(tmp_path):
    hf = small_hf_qwen2(tmp_path)
    ours, tok = M.load(str(tmp_path))
    outs = S.generate(ours, tok, PROMPTS[:3], temperature=0.0, max_new_tokens=10, batch_size=2)
    for p, samples in zip(PROMPTS[:3], outs):
        ids = torch.tensor([tok.encode(p)])
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                          eos_token_id=1, pad_token_id=0)[0, ids.shape[1]:].tolist()
        assert samples[0].token_ids == ref


def test_logprobs_equal_full_forward_at_temperature(tiny):
    model, tok = tiny
    outs = S.generate(model, tok, PROMPTS, n=2, temperature=0.7, top_p=0.9, max_new_tokens=9, batch_size=3, seed=5)
    for p, samples in zip(PROMPTS, outs):
        for s in samples:
            ids = torch.tensor([tok.encode(p) + s.token_ids])
            with torch.no_grad():
                logits = model(ids, return_logits=True).logits[0].float()
            P = len(tok.encode(p))
            full = F.log_softmax(logits[P - 1:-1] / 0.7, -1).gather(-1, torch.tensor(s.token_ids)[:, None])[:, 0]
            assert torch.allclose(torch.tensor(s.logprobs), full, atol=1e-4)
            assert len(s.logprobs) == len(s.token_ids)


def test_eos_length_and_refill_bookkeeping(tiny):
    model, tok = tiny
    eos_before = model.cfg.eos_token_id
    ref = naive_greedy(model, tok.encode(PROMPTS[0]), 12, [])
    model.cfg.eos_token_id = ref[3]  # make prompt 0's 4th greedy token an end-of-sequence token
    try:
        eos = S.stop_ids(model, tok)
        outs = S.generate(model, tok, PROMPTS, n=3, temperature=0.0, max_new_tokens=12, batch_size=2)
    finally:
        model.cfg.eos_token_id = eos_before
    assert [len(o) for o in outs] == [3, 3, 3, 3]  # every job served once, through 2 slots
    s0 = outs[0][0]
    first = ref.index(ref[3])
    assert s0.finish_reason == "eos" and s0.token_ids == ref[:first + 1]  # stops at (and keeps) the EOS
    for samples, p in zip(outs, PROMPTS):
        for s in samples:
            assert s.prompt_index == PROMPTS.index(p)
            if s.finish_reason == "length":
                assert len(s.token_ids) == 12 and not set(s.token_ids) & set(eos)
            else:
                assert s.token_ids[-1] in eos and not set(s.token_ids[:-1]) & set(eos)
            assert s.text == tok.decode(s.token_ids, skip_special_tokens=True)


def test_reproducible_from_seed(tiny):
    model, tok = tiny
    kw = dict(n=2, temperature=1.0, top_p=0.95, max_new_tokens=8, batch_size=4)
    a = S.generate(model, tok, PROMPTS, seed=1, **kw)
    b = S.generate(model, tok, PROMPTS, seed=1, **kw)
    c = S.generate(model, tok, PROMPTS, seed=2, **kw)
    ids = lambda o: [s.token_ids for x in o for s in x]  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_cli_under_torchrun_splits_the_prompts_over_ranks(tmp_path):
    """2 CPU ranks: each writes OUT.rankR with its share of the prompts (rank r takes prompts r, r+2, ...), and
    both end through dist.cleanup with status 0."""
    from scripts import run_script
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"{k}+{k}="}) + "\n" for k in range(3)))
    out = tmp_path / "s.jsonl"
    stdout = run_script("sample.py", ["--model", "tiny", "--prompts", str(prompts), "--n-samples", "2",
                                      "--max-new-tokens", "4", "--out", str(out)], torchrun=True)
    got = {r: [json.loads(x)["prompt_index"] for x in (tmp_path / f"s.jsonl.rank{r}").read_text().splitlines()]
           for r in (0, 1)}
    assert got == {0: [0, 0, 2, 2], 1: [1, 1]} and not out.exists()
    assert "wrote 4 samples to" in stdout  # rank 0's line, flushed before the process ended


def test_cli_writes_samples_and_rejects_bad_files(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps({"prompt": "1+1="}) + "\n\n" + json.dumps({"prompt": "2+2="}) + "\n")
    out = tmp_path / "s.jsonl"
    r = subprocess.run([sys.executable, "sample.py", "--model", "tiny", "--prompts", str(good), "--n", "2",
                        "--max-new-tokens", "5", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and {r["prompt_index"] for r in rows} == {0, 1}
    assert all(r["num_tokens"] <= 5 for r in rows)
    assert "KV cache: 4 slots x " in r.stdout  # --kv-slots 0 (default): 4 jobs, all fit
    r = subprocess.run([sys.executable, "sample.py", "--model", "tiny", "--prompts", str(good), "--n", "2",
                        "--max-new-tokens", "5", "--kv-slots", "3", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "KV cache: 3 slots x " in r.stdout, r.stdout + r.stderr[-2000:]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "ok"}) + "\n" + '{"prompt": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected"):
        S.read_prompts(str(bad))
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: invalid JSON"):
        S.read_prompts(str(bad))
    r = subprocess.run([sys.executable, "sample.py", "--prompts", str(tmp_path / "missing.jsonl")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "missing.jsonl" in r.stderr


@pytest.mark.skipif(CUDA, reason="CPU interpreter only; on a GPU test_cuda_* run the compiled kernels")
def test_triton_backend_sampler_matches_torch(tiny):
    """The whole decode step through the Triton kernels (interpreter on CPU) samples the same tokens."""
    model, tok = tiny
    kw = dict(n=2, temperature=0.7, top_p=0.9, max_new_tokens=5, batch_size=3, seed=4)
    ref = S.generate(model, tok, PROMPTS[:2], **kw)
    with longcot_kernels.use("triton"):
        got = S.generate(model, tok, PROMPTS[:2], **kw)
    for a, b in zip(ref, got):
        for x, y in zip(a, b):
            assert x.token_ids == y.token_ids
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4)


# ---------------------------------------------------------------- slots from a memory budget

QWEN_MATH_7B = M.Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                        num_kv_heads=4, head_dim=128, tie_word_embeddings=False)


def test_kv_bytes_and_slots_hand_computed():
    # K and V x 28 layers x 4 kv heads x 128 dims x 2 bytes (bf16) = 57,344 bytes per token
    assert S.kv_bytes_per_token(QWEN_MATH_7B, torch.bfloat16) == 57_344
    assert S.kv_bytes_per_token(QWEN_MATH_7B, torch.float32) == 114_688
    per_slot = S.kv_bytes_per_slot(QWEN_MATH_7B, 16384, torch.bfloat16)
    assert per_slot == 939_524_096  # 0.94 GB (0.875 GiB) per 16K-token slot
    assert S.kv_slots(QWEN_MATH_7B, 16384, torch.bfloat16, 100e9) == 106  # 100e9 / 939,524,096 = 106.4
    assert S.kv_slots(QWEN_MATH_7B, 16384, torch.bfloat16, 2 * per_slot - 1) == 1
    assert S.kv_slots(QWEN_MATH_7B, 16384, torch.bfloat16, 0) == 1  # always at least one
    # the 512 slots of ppo.py's old max(64, prompts x n) at 16K tokens: 481 GB, what no GPU has
    assert 512 * per_slot == 481_036_337_152
    assert S.kv_budget("cpu") == S.CPU_KV_BUDGET


def test_choose_slots():
    cap, bf = 16384, torch.bfloat16
    budget = 10 * S.kv_bytes_per_slot(QWEN_MATH_7B, cap, bf) + 5
    assert S.choose_slots(QWEN_MATH_7B, 512, cap, bf, "cpu", budget=budget) == 10  # the rest queue
    assert S.choose_slots(QWEN_MATH_7B, 4, cap, bf, "cpu", budget=budget) == 4  # no more slots than jobs
    assert S.choose_slots(QWEN_MATH_7B, 512, cap, bf, "cpu", batch_size=64, budget=budget) == 64  # explicit wins
    assert S.choose_slots(QWEN_MATH_7B, 8, cap, bf, "cpu", batch_size=64) == 8


def ids_of(outs):
    return [[s.token_ids for s in group] for group in outs]


def test_small_budget_queues_and_equals_unbudgeted_run(tiny):
    """A budget of 2.5 slots gives 2 slots; the other jobs queue, and every sample equals the all-slots run."""
    model, tok = tiny
    kw = dict(n=3, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=7)
    full = S.generate(model, tok, PROMPTS, batch_size=12, **kw)
    assert S.last_stats["slots"] == 12
    cap = max(len(tok.encode(p)) for p in PROMPTS) + 10
    budget = int(2.5 * S.kv_bytes_per_slot(model.cfg, cap, torch.float32))
    small = S.generate(model, tok, PROMPTS, kv_budget_bytes=budget, **kw)
    assert S.last_stats["slots"] == 2 and S.last_stats["capacity"] == cap
    assert S.last_stats["kv_bytes"] == 2 * S.kv_bytes_per_slot(model.cfg, cap, torch.float32)
    assert ids_of(small) == ids_of(full)
    for g, h in zip(small, full):  # log-probs: equal up to the batch size's effect on matmul rounding
        for x, y in zip(g, h):
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)
    auto = S.generate(model, tok, PROMPTS, **kw)  # batch_size None: the CPU budget holds all 12 jobs
    assert S.last_stats["slots"] == 12 and ids_of(auto) == ids_of(full)


def test_sampled_tokens_independent_of_slot_count(tiny):
    model, tok = tiny
    kw = dict(n=2, temperature=0.8, top_p=0.95, max_new_tokens=9, seed=11)
    runs = [ids_of(S.generate(model, tok, PROMPTS, batch_size=b, **kw)) for b in (1, 3, 8)]
    assert runs[0] == runs[1] == runs[2]  # results[i][k] is sample k of prompt i, whatever its slot


# ---------------------------------------------------------------- polling and the kept cache

def frequent_token(outs):
    """The most common generated token after the first two of each sample."""
    counts = {}
    for g in outs:
        for s in g:
            for t in s.token_ids[2:]:
                counts[t] = counts.get(t, 0) + 1
    return max(counts, key=counts.get)


def test_poll_interval_changes_nothing_and_drops_tokens_after_eos(tiny):
    """Rows that stop at EOS between two polls (poll_every > 1) stop on the device: the same samples as polling
    every step, each ending at its first stop token, and equal to the no-EOS run cut there (the draws depend
    only on (seed, job, step) and the context, so the run without that EOS is the same up to it)."""
    model, tok = tiny
    kw = dict(n=3, temperature=1.0, top_p=1.0, max_new_tokens=24, seed=3, batch_size=5)
    free_run = S.generate(model, tok, PROMPTS, **kw)
    eos_before = model.cfg.eos_token_id
    model.cfg.eos_token_id = frequent_token(free_run)
    try:
        stops = set(S.stop_ids(model, tok))
        runs = {k: S.generate(model, tok, PROMPTS, poll_every=k, **kw) for k in (1, 4, 7, 100)}
    finally:
        model.cfg.eos_token_id = eos_before
    assert S.last_stats["polls"] < S.last_stats["steps"]
    n_eos = 0
    for k, outs in runs.items():
        assert ids_of(outs) == ids_of(runs[1]), f"poll_every={k}"
        assert [[s.finish_reason for s in g] for g in outs] == [[s.finish_reason for s in g] for g in runs[1]]
        for g, ref_g in zip(outs, free_run):
            for s, ref in zip(g, ref_g):
                cut = next((j + 1 for j, t in enumerate(ref.token_ids) if t in stops), len(ref.token_ids))
                assert s.token_ids == ref.token_ids[:cut]
                assert torch.allclose(torch.tensor(s.logprobs), torch.tensor(ref.logprobs[:cut]), atol=1e-5)
                assert s.finish_reason == ("eos" if cut < len(ref.token_ids) or ref.token_ids[-1] in stops
                                           else "length")
                assert s.text == tok.decode(s.token_ids, skip_special_tokens=True)
                n_eos += s.finish_reason == "eos"
    assert 8 <= n_eos < 4 * 12  # rows stopped at EOS at various steps, some ran to the limit


def test_kept_cache_is_reused_and_gives_the_same_samples(tiny):
    model, tok = tiny
    kw = dict(n=2, temperature=0.9, top_p=0.9, max_new_tokens=8, batch_size=3)
    fresh = [ids_of(S.generate(model, tok, PROMPTS, seed=sd, **kw)) for sd in (1, 2)]
    try:
        a = ids_of(S.generate(model, tok, PROMPTS, seed=1, keep_cache=True, **kw))
        assert not S.last_stats["reused"]
        b = ids_of(S.generate(model, tok, PROMPTS, seed=2, keep_cache=True, **kw))  # new seed, same state
        assert S.last_stats["reused"]
        assert a == fresh[0] and b == fresh[1]
        S.generate(model, tok, PROMPTS, seed=1, keep_cache=True, **dict(kw, max_new_tokens=9))
        assert not S.last_stats["reused"]  # another capacity: a new cache
        # weights replaced (not updated in place): a captured graph would read the old storage, so no reuse
        S.generate(model, tok, PROMPTS, seed=1, keep_cache=True, **kw)
        w = model.model.norm.weight
        model.model.norm.weight = torch.nn.Parameter(w.detach().clone())
        try:
            assert ids_of(S.generate(model, tok, PROMPTS, seed=1, keep_cache=True, **kw)) == fresh[0]
            assert not S.last_stats["reused"]
        finally:
            model.model.norm.weight = w
    finally:
        S.release_cache()
    assert not S._kept


def test_bad_arguments(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="max_new_tokens"):
        S.generate(model, tok, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        S.generate(model, tok, [[5, 6], []], max_new_tokens=3)


# ---------------------------------------------------------------- CUDA: the captured decode step

@pytest.fixture(scope="module")
def tiny_cuda():
    if not CUDA:
        pytest.skip("needs a CUDA GPU")
    return M.load("tiny", seed=3, device="cuda")  # fp32: exact comparisons with the no-cache loop


@needs_cuda
def test_cuda_graph_greedy_equals_naive_loop_with_refill(tiny_cuda):
    model, tok = tiny_cuda
    assert longcot_kernels.backend() == "triton"
    eos = S.stop_ids(model, tok)
    outs = S.generate(model, tok, PROMPTS, n=2, temperature=0.0, max_new_tokens=12, batch_size=3)  # 8 jobs, 3 slots
    assert S.last_stats["setup_s"] > 0  # a CUDA graph was captured and replayed
    for p, samples in zip(PROMPTS, outs):
        ref = naive_greedy(model, tok.encode(p), 12, eos)
        assert [s.token_ids for s in samples] == [ref, ref]


@needs_cuda
def test_cuda_graph_greedy_equals_transformers_generate(tmp_path):
    hf = small_hf_qwen2(tmp_path)
    ours, tok = M.load(str(tmp_path), device="cuda")
    hf = hf.cuda()
    outs = S.generate(ours, tok, PROMPTS[:3], temperature=0.0, max_new_tokens=10, batch_size=2)
    for p, samples in zip(PROMPTS[:3], outs):
        ids = torch.tensor([tok.encode(p)], device="cuda")
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                          eos_token_id=1, pad_token_id=0)[0, ids.shape[1]:].tolist()
        assert samples[0].token_ids == ref


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_sampled_equals_eager_and_is_reproducible(dtype):
    """The captured step replays the eager step's kernels: the same tokens (bf16 too), from the seed alone;
    polling every 16 steps (the default with a graph) or every step changes nothing; refills happen inside."""
    model, tok = M.load("tiny", seed=3, device="cuda", dtype=dtype)
    kw = dict(n=3, temperature=0.8, top_p=0.95, max_new_tokens=20, batch_size=5, seed=9)
    graph = S.generate(model, tok, PROMPTS, **kw)
    assert S.last_stats["setup_s"] > 0
    eager = S.generate(model, tok, PROMPTS, cuda_graph=False, **kw)
    again = S.generate(model, tok, PROMPTS, poll_every=1, **kw)
    other = S.generate(model, tok, PROMPTS, **dict(kw, seed=10))
    assert ids_of(graph) == ids_of(eager) == ids_of(again) != ids_of(other)
    for g, e in zip(graph, eager):
        for a, b in zip(g, e):
            assert a.logprobs == b.logprobs and a.finish_reason == b.finish_reason


@needs_cuda
def test_cuda_kept_graph_is_reused(tiny_cuda):
    model, tok = tiny_cuda
    kw = dict(n=2, temperature=0.7, top_p=0.9, max_new_tokens=16, batch_size=4)
    fresh = ids_of(S.generate(model, tok, PROMPTS, seed=2, **kw))
    try:
        S.generate(model, tok, PROMPTS, seed=1, keep_cache=True, **kw)
        assert not S.last_stats["reused"] and S.last_stats["setup_s"] > 0
        again = ids_of(S.generate(model, tok, PROMPTS, seed=2, keep_cache=True, **kw))
        assert S.last_stats["reused"] and S.last_stats["setup_s"] == 0  # no capture the second time
        assert again == fresh
    finally:
        S.release_cache()


@needs_cuda
def test_cuda_budget_from_free_memory(tiny_cuda):
    model, tok = tiny_cuda
    free, total = torch.cuda.mem_get_info()
    budget = S.kv_budget("cuda")
    held = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    assert 0 < budget <= free + held - int(S.GPU_MARGIN * total)
    S.generate(model, tok, PROMPTS, n=2, temperature=0.0, max_new_tokens=4)
    assert S.last_stats["slots"] == 8 and S.last_stats["capacity"] % S.CAPACITY_ROUND == 0


def test_prefill_runs_in_chunks_of_bounded_width_and_changes_nothing(monkeypatch, tiny):
    """Refilling many slots prefills their prompts in chunks of <= PREFILL_TOKENS padded tokens (one forward of
    32 slots x 2,048 tokens held ~8 GiB of activations at 7B: plan.py); the samples are the same."""
    m, tok = tiny
    prompts = ["1+2=", "345+678=", "9+9=", "12+34+56=", "7="]
    whole = S.generate(m, tok, prompts, n=3, temperature=0.7, top_p=0.9, max_new_tokens=6, seed=2)
    widths = []
    real = type(m).forward

    def spy(self, input_ids, *a, **k):
        if k.get("slots") is not None:
            widths.append(input_ids.numel())
        return real(self, input_ids, *a, **k)
    monkeypatch.setattr(type(m), "forward", spy)
    monkeypatch.setattr(S, "PREFILL_TOKENS", 20)
    chunked = S.generate(m, tok, prompts, n=3, temperature=0.7, top_p=0.9, max_new_tokens=6, seed=2)
    assert [[s.token_ids for s in g] for g in chunked] == [[s.token_ids for s in g] for g in whole]
    assert len(widths) > 1 and max(widths) <= 20, widths
