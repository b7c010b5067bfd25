"""Cross-entropy of the lm head without the [tokens, vocab] logits: a fused, chunked linear + loss.

`F.cross_entropy(h @ W.T, targets)` materialises the logits, then a log-softmax of the same size,
then in backward a zero-filled one-hot gradient and the log-softmax gradient: four [N, V] float32
tensors (for the 7B preset, 8 x 4096 tokens x 50k vocabulary: 6.5 GB each) and as many passes over
memory. `linear_cross_entropy` instead walks the rows in chunks: for each it computes the chunk's
logits into one reused buffer, turns them in place into the gradient of the loss with respect to
those logits (softmax minus one-hot, over the number of counted targets, plus the z-loss term), and
immediately multiplies that into the gradients of h and W. The backward pass only scales the stored
gradients by the incoming one. It is the same idea as Liger Kernel's fused linear cross-entropy and
torchtune's chunked loss, in plain PyTorch so it runs on CPU and GPU alike.

Measured in `bench/bench_train.py` (docs/benchmarks.md). Without autograd (evaluation) the same
chunked loop computes the loss alone.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .config import LOSS_CHUNK_ELEMENTS as CHUNK_ELEMENTS


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run the lm head's matmul in (x's own outside autocast)."""
    if x.device.type in ("cuda", "cpu") and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _chunk_loss(logits: torch.Tensor, targets: torch.Tensor, z_loss: float, scale: torch.Tensor | None):
    """Per-chunk work on float32 logits [c, V], which it overwrites: returns (sum of cross-entropy
    over counted rows, sum of lse^2 over counted rows). With `scale` (1 / counted rows) `logits` ends
    as d loss / d logits: (softmax * (1 + 2 z lse) - onehot) * scale, zero on ignored rows."""
    valid = targets != -1
    safe = targets.clamp(min=0)
    target_logit = logits.gather(1, safe[:, None]).squeeze(1)
    peak = logits.amax(1, keepdim=True)
    probs = logits.sub_(peak).exp_()  # unnormalised
    total = probs.sum(1, keepdim=True)
    lse = (peak + total.log()).squeeze(1)
    if scale is not None:
        keep = valid.to(logits.dtype) * scale
        row = keep / total.squeeze(1)
        if z_loss > 0:
            row = row * (1 + 2 * z_loss * lse)
        probs.mul_(row[:, None])
        probs[torch.arange(probs.shape[0], device=probs.device), safe] -= keep
    ce = torch.where(valid, lse - target_logit, 0.0).sum()
    zz = torch.where(valid, lse.square(), 0.0).sum() if z_loss > 0 else ce.new_zeros(())
    return ce, zz


def _add_chunk_grads(d: torch.Tensor, part: torch.Tensor, wc: torch.Tensor, start: int,
                     grad_h: torch.Tensor | None, grad_w: torch.Tensor | None, weight_grad: bool):
    """Multiply a chunk's d loss / d logits (d [c, V], in the matmul's dtype) into the gradients: h's
    rows start..start+c are written into grad_h (when given), W's is added to grad_w (float32; None
    before the first chunk). Returns grad_w."""
    if grad_h is not None:
        torch.mm(d, wc, out=grad_h[start:start + part.shape[0]])
    if not weight_grad:
        return grad_w
    if grad_w is None:
        return torch.mm(d.t(), part).float()
    if d.dtype == torch.float32:
        return grad_w.addmm_(d.t(), part)
    return grad_w.add_(torch.mm(d.t(), part))


def _chunked(h, weight, targets, z_loss: float, rows: int, grads: bool):
    """The loss over chunks of `rows` rows, and with `grads` the gradients of h and W (None for an
    input that does not require one; W's in float32)."""
    n = (targets != -1).sum().clamp(min=1).to(torch.float32)
    dtype = _compute_dtype(h)
    with torch.autocast(h.device.type, enabled=False):
        hc, wc = h.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(hc) if grads and h.requires_grad else None
        grad_w = None  # the first chunk's product, then the others added to it
        rows = max(1, min(rows, h.shape[0]))
        buf = torch.empty(rows, weight.shape[0], dtype=dtype, device=h.device)
        ce = torch.zeros((), dtype=torch.float32, device=h.device)
        zz = torch.zeros((), dtype=torch.float32, device=h.device)
        for i in range(0, h.shape[0], rows):
            part = hc[i:i + rows]
            logits = torch.mm(part, wc.t(), out=buf[:part.shape[0]])
            if dtype != torch.float32:
                logits = logits.float()
            c, z = _chunk_loss(logits, targets[i:i + rows], z_loss, 1.0 / n if grads else None)
            ce, zz = ce + c, zz + z
            if not grads:
                continue
            grad_w = _add_chunk_grads(logits.to(dtype), part, wc, i, grad_h, grad_w, weight.requires_grad)
    return (ce + z_loss * zz) / n, grad_h, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, z_loss, chunk_rows):
        loss, grad_h, grad_w = _chunked(h, weight, targets, z_loss, chunk_rows, grads=True)
        # Kept until backward: h's gradient in the matmul's dtype (as autocast's would be), W's in W's
        # own (bfloat16 under FSDP's param_dtype, float32 master weights otherwise).
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype))
        ctx.h_dtype = h.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return (None if grad_h is None else (grad_h * grad_out.to(grad_h.dtype)).to(ctx.h_dtype),
                None if grad_w is None else grad_w * grad_out.to(grad_w.dtype), None, None, None)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         z_loss: float = 0.0, chunk_rows: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of softmax(h @ weight.T) against targets (-1 = not counted), plus
    z_loss * mean(logsumexp^2) over the counted rows; h [N, D], weight [V, D], targets [N].

    Equal to `F.cross_entropy(F.linear(h, weight).float(), targets, ignore_index=-1)` (plus the
    z-loss) up to float rounding, gradients included; never holds more than one chunk of logits.
    """
    if h.dim() != 2 or targets.shape != h.shape[:1]:
        raise ValueError(f"linear_cross_entropy wants h [N, D] and targets [N], got {tuple(h.shape)} "
                         f"and {tuple(targets.shape)}")
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight.shape[0])
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, targets, float(z_loss), rows)
    with torch.no_grad():  # evaluation: the loss alone, chunk by chunk
        return _chunked(h, weight, targets, float(z_loss), rows, grads=False)[0]


# --- per-token log-probabilities (DPO): the same chunking, the gradient recomputed in backward ------


def _token_logps(hc: torch.Tensor, wc: torch.Tensor, targets: torch.Tensor, rows: int):
    """(log p(target) per row, 0 where target == -1; logsumexp per row), float32 [N] each, from
    hc [N, D] and wc [V, D] already in the matmul's dtype, one chunk of logits at a time."""
    logps = torch.empty(hc.shape[0], dtype=torch.float32, device=hc.device)
    lse = torch.empty_like(logps)
    for i in range(0, hc.shape[0], rows):
        logits = torch.mm(hc[i:i + rows], wc.t()).float()
        t = targets[i:i + rows]
        lse[i:i + rows] = torch.logsumexp(logits, 1)
        picked = logits.gather(1, t.clamp(min=0)[:, None]).squeeze(1)
        logps[i:i + rows] = torch.where(t != -1, picked - lse[i:i + rows], 0.0)
    return logps, lse


class _LinearTokenLogps(torch.autograd.Function):
    """Per-row log p(target): unlike the mean loss, each row's upstream gradient is only known in
    backward (DPO weighs sequences by their margin), so backward recomputes each chunk's logits (one
    matmul more than `_LinearCrossEntropy`) instead of keeping [N, V] of them: it keeps h, W and the
    per-row logsumexp."""

    @staticmethod
    def forward(ctx, h, weight, targets, rows):
        dtype = _compute_dtype(h)
        with torch.autocast(h.device.type, enabled=False):
            logps, lse = _token_logps(h.to(dtype), weight.to(dtype), targets, rows)
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.rows, ctx.dtype = rows, dtype
        return logps

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        # d log p(t_i) / d logits_ij = onehot_ij - softmax_ij, times the row's upstream gradient g_i.
        h, weight, targets, lse = ctx.saved_tensors
        dtype, rows = ctx.dtype, ctx.rows
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        valid = targets != -1
        g = torch.where(valid, grad.float(), 0.0)
        safe = targets.clamp(min=0)
        hc, wc = h.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(hc) if need_h else None
        grad_w = None
        for i in range(0, h.shape[0], rows):
            part, gi = hc[i:i + rows], g[i:i + rows]
            probs = torch.mm(part, wc.t()).float().sub_(lse[i:i + rows, None]).exp_()
            probs.mul_(-gi[:, None])
            probs[torch.arange(probs.shape[0], device=probs.device), safe[i:i + rows]] += gi
            grad_w = _add_chunk_grads(probs.to(dtype), part, wc, i, grad_h, grad_w, need_w)
        return (None if grad_h is None else grad_h.to(h.dtype),
                None if grad_w is None else grad_w.to(weight.dtype), None, None)


def linear_token_logps(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                       chunk_rows: int | None = None) -> torch.Tensor:
    """log softmax(h @ weight.T)[target] per row, float32 [N], 0 where target == -1; h [N, D],
    weight [V, D], targets [N]. Equal to `log_softmax(F.linear(h, weight).float()).gather(targets)`
    up to float rounding, gradients included, without holding more than one chunk of logits."""
    if h.dim() != 2 or targets.shape != h.shape[:1]:
        raise ValueError(f"linear_token_logps wants h [N, D] and targets [N], got {tuple(h.shape)} "
                         f"and {tuple(targets.shape)}")
    rows = max(1, chunk_rows or CHUNK_ELEMENTS // weight.shape[0])
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearTokenLogps.apply(h, weight, targets, rows)
    dtype = _compute_dtype(h)
    with torch.no_grad(), torch.autocast(h.device.type, enabled=False):
        return _token_logps(h.to(dtype), weight.to(dtype), targets, rows)[0]


# --- distillation: KL to a teacher's distribution plus cross-entropy, the student's logits chunked --


def _distill_chunk(s: torch.Tensor, t: torch.Tensor, targets: torch.Tensor, temperature: float,
                   alpha: float, grads: bool):
    """On a chunk of float32 student logits s [c, V] (overwritten) and teacher logits t [c, V]:
    (sum of KL(softmax(t/T) || softmax(s/T)), sum of CE(s, target)) over rows whose target is not -1,
    and with `grads` s ends as d/ds of sum(alpha T^2 KL + (1 - alpha) CE):
    alpha T (softmax(s/T) - softmax(t/T)) + (1 - alpha) (softmax(s) - onehot), zero on ignored rows."""
    valid = targets != -1
    safe = targets.clamp(min=0)
    log_pt = torch.log_softmax(t.float() / temperature, dim=-1)
    log_ps = torch.log_softmax(s / temperature, dim=-1)
    lse = torch.logsumexp(s, dim=-1)
    ce = torch.where(valid, lse - s.gather(1, safe[:, None]).squeeze(1), 0.0).sum()
    pt = log_pt.exp()
    kl_rows = log_pt.sub_(log_ps).mul_(pt).sum(-1)  # sum_j pt (log pt - log ps); log_pt is spent
    kl = torch.where(valid, kl_rows, 0.0).sum()
    if grads:
        keep = valid.to(s.dtype)
        probs = s.sub_(lse[:, None]).exp_().mul_((1 - alpha) * keep[:, None])  # (1 - alpha) softmax(s)
        probs.add_(log_ps.exp_().sub_(pt).mul_(alpha * temperature * keep[:, None]))
        probs[torch.arange(probs.shape[0], device=probs.device), safe] -= (1 - alpha) * keep
    return kl, ce


def _distill_chunked(h, weight, teacher, targets, temperature, alpha, rows, grads):
    dtype = _compute_dtype(h)
    with torch.autocast(h.device.type, enabled=False):
        hc, wc = h.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(hc) if grads and h.requires_grad else None
        grad_w = None
        kl = torch.zeros((), dtype=torch.float32, device=h.device)
        ce = torch.zeros((), dtype=torch.float32, device=h.device)
        for i in range(0, h.shape[0], rows):
            part = hc[i:i + rows]
            s = torch.mm(part, wc.t()).float()
            k, c = _distill_chunk(s, teacher[i:i + rows], targets[i:i + rows], temperature, alpha, grads)
            kl, ce = kl + k, ce + c
            if not grads:
                continue
            grad_w = _add_chunk_grads(s.to(dtype), part, wc, i, grad_h, grad_w, weight.requires_grad)
    return kl, ce, grad_h, grad_w


class _LinearDistill(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, teacher, targets, temperature, alpha, rows):
        kl, ce, grad_h, grad_w = _distill_chunked(h, weight, teacher, targets, temperature, alpha, rows, True)
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype))
        ctx.h_dtype = h.dtype
        ctx.mark_non_differentiable(kl, ce)
        return alpha * temperature ** 2 * kl + (1 - alpha) * ce, kl, ce

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _grad_kl, _grad_ce):
        grad_h, grad_w = ctx.saved_tensors
        return (None if grad_h is None else (grad_h * grad_loss.to(grad_h.dtype)).to(ctx.h_dtype),
                None if grad_w is None else grad_w * grad_loss.to(grad_w.dtype), None, None, None, None, None)


def linear_distill_loss(h: torch.Tensor, weight: torch.Tensor, teacher_logits: torch.Tensor,
                        targets: torch.Tensor, temperature: float, alpha: float, *,
                        chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum over counted rows of alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE(s, target),
    sum of KL, sum of CE) with s = h @ weight.T: h [N, D], weight [V, D], teacher_logits [N, V] (any
    float dtype; bf16 halves what the teacher holds), targets [N] (-1: not counted). The student's
    [N, V] logits, their log-softmaxes and gradient are never held whole: each chunk's gradient is
    multiplied into h's and W's at once (as `linear_cross_entropy` does), a quarter of the elements
    per chunk since the chunk keeps four [rows, V] float32 temporaries."""
    if h.dim() != 2 or targets.shape != h.shape[:1] or teacher_logits.shape != (h.shape[0], weight.shape[0]):
        raise ValueError(f"linear_distill_loss wants h [N, D], weight [V, D], teacher_logits [N, V] and "
                         f"targets [N], got {tuple(h.shape)}, {tuple(weight.shape)}, "
                         f"{tuple(teacher_logits.shape)} and {tuple(targets.shape)}")
    rows = max(1, chunk_rows or CHUNK_ELEMENTS // 4 // weight.shape[0])
    T, a = float(temperature), float(alpha)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearDistill.apply(h, weight, teacher_logits, targets, T, a, rows)
    with torch.no_grad():
        kl, ce, _, _ = _distill_chunked(h, weight, teacher_logits, targets, T, a, rows, False)
        return a * T ** 2 * kl + (1 - a) * ce, kl, ce
