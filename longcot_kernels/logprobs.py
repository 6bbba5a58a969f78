"""Per-token log-probabilities straight from hidden states, without full-vocabulary fp32 logits.

    logp[n] = log_softmax(h[n] @ W.T / temperature)[target[n]]            # (N,)

The naive path materialises logits (B, T, V) in fp32: for 4 x 2048 tokens and Qwen's 152k vocabulary that
is 5 GB, plus as much again for the gradient. Here the N rows are processed in chunks; each chunk's logits
live only inside the loop, and the backward pass recomputes them (the same trade as activation
checkpointing), so peak extra memory is one (chunk, V) fp32 block. Gradients (Liger-Kernel's "fused linear
cross-entropy" idea, written as a plain torch autograd.Function):

    d logp / d logits = (onehot(target) - softmax(logits / T)) / T

Parts: `linear_logprobs_ref` (the naive reference: full logits), `linear_logprobs` (the chunked autograd
function used by model.py). Tested in tests/test_model.py, benchmarked in bench/bench_train.py.
The entropy of each row's tempered distribution comes out of the same pass (no gradient; PPO logs it).
"""
import torch
import torch.nn.functional as F


def linear_logprobs_ref(hidden, weight, targets, temperature=1.0):
    """Naive reference. hidden (N, D), weight (V, D), targets (N,) -> logprobs (N,), entropy (N,)."""
    logits = (hidden @ weight.t()).to(torch.promote_types(hidden.dtype, torch.float32)) / temperature  # (N, V) fp32: the tensor we avoid
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy.detach()


class _ChunkedLinearLogprobs(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")  # backward then runs under the same autocast state
    def forward(ctx, hidden, weight, targets, temperature, chunk):
        N = hidden.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 softmax (fp64 in exactness tests)
        logp = torch.empty(N, dtype=acc, device=hidden.device)
        entropy = torch.empty(N, dtype=acc, device=hidden.device)
        for s in range(0, N, chunk):
            logits = (hidden[s:s + chunk] @ weight.t()).to(acc) / temperature  # (c, V)
            lse = torch.logsumexp(logits, dim=-1)  # (c,)
            logp[s:s + chunk] = logits.gather(-1, targets[s:s + chunk, None]).squeeze(-1) - lse
            p = torch.exp(logits - lse[:, None])
            entropy[s:s + chunk] = lse - (p * logits).sum(-1)  # H = logsumexp - E_p[logit]
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_logp, _grad_entropy):
        hidden, weight, targets = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        acc = torch.promote_types(hidden.dtype, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s:s + chunk]
            logits = (h @ weight.t()).to(acc) / T  # (c, V), recomputed
            g = -torch.softmax(logits, dim=-1)  # d logp / d (logits/T) = onehot - p
            g.scatter_add_(-1, targets[s:s + chunk, None], torch.ones_like(g[:, :1]))
            g = (g * (grad_logp[s:s + chunk, None] / T)).to(hidden.dtype)  # chain rule through /T
            if grad_h is not None:
                grad_h[s:s + chunk] = g @ weight
            if grad_w is not None:
                grad_w += (g.t() @ h).to(acc)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None


def linear_logprobs(hidden, weight, targets, temperature=1.0, chunk=1024):
    """Chunked log-probs. hidden (N, D), weight (V, D), targets (N,) int64 -> logprobs (N,) fp32 with
    gradient to hidden and weight, entropy (N,) fp32 without. `chunk` rows per block: memory O(chunk * V)."""
    if hidden.shape[0] == 0:
        z = hidden.new_zeros(0, dtype=torch.float32)
        return z + (hidden.sum() + weight.sum()) * 0, z  # keep the graph connected for empty input
    return _ChunkedLinearLogprobs.apply(hidden, weight, targets, float(temperature), int(chunk))
