"""The fused, chunked cross-entropy (loss.py) and the model's CPU-only paths, against the plain ones."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import tenali_model.model as model_module
from tenali_model.config import preset
from tenali_model.loss import linear_cross_entropy, linear_distill_loss, linear_token_logps
from tenali_model.model import RMSNorm, Transformer


def _reference(h, w, t, z_loss):
    logits = F.linear(h, w).float()
    loss = F.cross_entropy(logits, t, ignore_index=-1)
    keep = t != -1
    if z_loss > 0 and keep.any():
        loss = loss + z_loss * torch.logsumexp(logits[keep], -1).pow(2).mean()
    return loss


def _grads(fn, h, w, t, z_loss):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = fn(h, w, t, z_loss)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
@pytest.mark.parametrize("chunk_rows", [None, 7, 64])  # one chunk; uneven chunks; one per 64 rows
def test_matches_cross_entropy_and_its_gradients(z_loss, chunk_rows):
    torch.manual_seed(0)
    h, w = torch.randn(100, 16), torch.randn(50, 16)
    t = torch.randint(0, 50, (100,))
    t[[3, 40, 41, 99]] = -1  # not counted
    ref = _grads(_reference, h, w, t, z_loss)
    got = _grads(lambda *a: linear_cross_entropy(*a[:3], z_loss=a[3], chunk_rows=chunk_rows), h, w, t, z_loss)
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # evaluation: the loss alone, the same value
        torch.testing.assert_close(linear_cross_entropy(h, w, t, z_loss=z_loss, chunk_rows=chunk_rows), ref[0])


def test_gradient_scales_with_the_incoming_one_and_only_where_asked():
    torch.manual_seed(1)
    h, w, t = torch.randn(12, 8), torch.randn(20, 8), torch.randint(0, 20, (12,))
    ref = _grads(lambda h, w, t, z: 3.0 * _reference(h, w, t, z), h, w, t, 0.0)
    got = _grads(lambda h, w, t, z: 3.0 * linear_cross_entropy(h, w, t, chunk_rows=5), h, w, t, 0.0)
    torch.testing.assert_close(got[1], ref[1])
    torch.testing.assert_close(got[2], ref[2])
    ww = w.clone().requires_grad_()  # h frozen: W's gradient alone
    linear_cross_entropy(h, ww, t).backward()
    torch.testing.assert_close(ww.grad, ref[2] / 3.0)
    hh = h.clone().requires_grad_()  # W frozen (LoRA's base weights): h's alone
    linear_cross_entropy(hh, w, t).backward()
    torch.testing.assert_close(hh.grad, ref[1] / 3.0)
    assert w.grad is None and h.grad is None


def test_every_target_ignored_gives_zero_and_zero_gradients():
    h, w = torch.randn(4, 8, requires_grad=True), torch.randn(10, 8, requires_grad=True)
    loss = linear_cross_entropy(h, w, torch.full((4,), -1))
    loss.backward()
    assert loss.item() == 0.0 and not h.grad.any() and not w.grad.any()


def test_no_rows_at_all():
    h, w = torch.randn(0, 8, requires_grad=True), torch.randn(10, 8, requires_grad=True)
    loss = linear_cross_entropy(h, w, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and h.grad.shape == (0, 8)


def test_bf16_autocast_is_close_to_autocast_cross_entropy():
    torch.manual_seed(2)
    h, w, t = torch.randn(64, 32), torch.randn(40, 32) * 0.3, torch.randint(0, 40, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _grads(_reference, h, w, t, 0.0)
        got = _grads(lambda *a: linear_cross_entropy(*a[:3], chunk_rows=16), h, w, t, 0.0)
        with torch.no_grad():  # evaluation under autocast
            evaluated = linear_cross_entropy(h, w, t, chunk_rows=16)
    assert got[1].dtype == h.dtype and got[2].dtype == w.dtype
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(evaluated, ref[0], rtol=2e-2, atol=2e-3)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"h \[N, D\] and targets \[N\]"):
        linear_cross_entropy(torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long))


def _model(**kw):
    torch.manual_seed(0)
    return Transformer(dataclasses.replace(preset("tiny"), **kw))


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": False}])
def test_model_training_loss_without_logits_matches(kw):
    idx = torch.randint(0, 512, (2, 33))
    targets = idx.roll(-1, 1)
    targets[0, :5] = -1
    grads = []
    for with_logits in (True, False):
        model = _model(**kw)
        logits, loss = model(idx, targets, z_loss=1e-3, with_logits=with_logits)
        assert (logits is None) != with_logits
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for name, g in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_a_hooked_head_is_called_not_bypassed():
    model = _model()
    calls = []
    model.lm_head.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    idx = torch.randint(0, 512, (2, 9))
    _, loss = model(idx, idx, with_logits=False)
    assert calls == [(2, 9, 512)] and loss.requires_grad


def test_rmsnorm_cpu_backward_matches_autograd_of_the_fused_op():
    torch.manual_seed(3)
    norm = RMSNorm(24)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 24, requires_grad=True)
    y = norm(x)  # the CPU path (grad enabled)
    ref = F.rms_norm(x, (24,), norm.weight, norm.eps)
    assert torch.equal(y, ref)  # the same forward bits
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, norm.weight), g)
    want = torch.autograd.grad(ref, (x, norm.weight), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    norm.weight.requires_grad_(False)  # frozen weight (LoRA): x's gradient alone
    (gx,) = torch.autograd.grad(norm(x), (x,), g)
    torch.testing.assert_close(gx, want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 1}])
def test_cpu_paths_train_like_the_cuda_paths(kw, monkeypatch):
    """Grouped-query attention inside SDPA and RMSNorm's own backward (CPU) against the repeated
    keys and F.rms_norm's autograd (what CUDA runs): same loss, same gradients."""
    idx = torch.randint(0, 512, (2, 17))
    out = []
    for cpu in (True, False):
        monkeypatch.setattr(model_module, "_cpu_paths", lambda x, cpu=cpu: cpu)
        model = _model(**kw)
        _, loss = model(idx, idx, with_logits=False)
        loss.backward()
        out.append((loss.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(out[0][0], out[1][0])
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --- per-token log-probabilities (DPO) ------------------------------------------------------------


def _ref_logps(h, w, t):
    logp = torch.log_softmax(F.linear(h, w).float(), -1).gather(1, t.clamp(min=0)[:, None]).squeeze(1)
    return torch.where(t != -1, logp, 0.0)


def _logp_grads(fn, h, w, t, weights, h_grad=True, w_grad=True):
    h, w = h.clone().requires_grad_(h_grad), w.clone().requires_grad_(w_grad)
    out = fn(h, w, t)
    (out * weights).sum().backward()  # each row its own upstream gradient, as DPO's margins give
    return out.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk_rows", [None, 7, 64])
def test_token_logps_match_log_softmax_and_its_gradients(chunk_rows):
    torch.manual_seed(3)
    h, w = torch.randn(100, 16), torch.randn(50, 16)
    t = torch.randint(0, 50, (100,))
    t[[0, 17, 18, 99]] = -1
    weights = torch.randn(100)
    ref = _logp_grads(_ref_logps, h, w, t, weights)
    got = _logp_grads(lambda *a: linear_token_logps(*a, chunk_rows=chunk_rows), h, w, t, weights)
    assert (got[0][[0, 17, 18, 99]] == 0).all()
    for a, b in zip(ref, got):  # (W's gradient sums the chunks in another order: atol 1e-5)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the reference model's path: values alone
        torch.testing.assert_close(linear_token_logps(h, w, t, chunk_rows=chunk_rows), ref[0])


def test_token_logps_gradient_only_where_asked():
    torch.manual_seed(4)
    h, w, t, weights = torch.randn(12, 8), torch.randn(20, 8), torch.randint(0, 20, (12,)), torch.randn(12)
    ref = _logp_grads(_ref_logps, h, w, t, weights)
    got = _logp_grads(lambda *a: linear_token_logps(*a, chunk_rows=5), h, w, t, weights, w_grad=False)
    assert got[2] is None
    torch.testing.assert_close(got[1], ref[1])
    got = _logp_grads(lambda *a: linear_token_logps(*a, chunk_rows=5), h, w, t, weights, h_grad=False)
    assert got[1] is None
    torch.testing.assert_close(got[2], ref[2])


def test_token_logps_under_bf16_autocast():
    torch.manual_seed(5)
    h, w, t, weights = torch.randn(64, 32), torch.randn(40, 32) * 0.3, torch.randint(0, 40, (64,)), torch.randn(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _logp_grads(_ref_logps, h, w, t, weights)
        got = _logp_grads(lambda *a: linear_token_logps(*a, chunk_rows=16), h, w, t, weights)
    assert got[0].dtype == torch.float32 and got[1].dtype == h.dtype and got[2].dtype == w.dtype
    torch.testing.assert_close(got[0], ref[0], rtol=2e-2, atol=2e-3)
    for a, b in zip(ref[1:], got[1:]):  # bf16 products rounded per chunk vs once: compare as a whole
        assert (b - a).norm() / a.norm() < 1e-2


def test_token_logps_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"linear_token_logps wants h \[N, D\] and targets \[N\]"):
        linear_token_logps(torch.randn(3, 4), torch.randn(5, 4), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": False}])
def test_model_token_logps_match_its_logits(kw):
    idx = torch.randint(0, 512, (3, 21))
    targets = idx.roll(-1, 1)
    targets[1, :6] = -1
    weights = torch.randn(3, 21)
    model = _model(**kw)
    logits = model(idx)[0]
    ref = torch.where(targets != -1, torch.log_softmax(logits, -1).gather(2, targets.clamp(min=0)[..., None])[..., 0], 0.0)
    (ref * weights).sum().backward()
    ref_grads = {n: p.grad for n, p in model.named_parameters()}
    model = _model(**kw)
    none, logps = model(idx, targets, token_logps=True)
    assert none is None and logps.shape == (3, 21)
    torch.testing.assert_close(logps, ref.detach(), rtol=1e-5, atol=1e-5)
    (logps * weights).sum().backward()
    for name, g in ref_grads.items():
        torch.testing.assert_close(model.get_parameter(name).grad, g, rtol=1e-4, atol=1e-6, msg=name)
    hooked = _model(**kw)  # a head that must be called takes the plain path: the same values
    calls = []
    hooked.lm_head.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    torch.testing.assert_close(hooked(idx, targets, token_logps=True)[1], logps.detach(), rtol=1e-5, atol=1e-5)
    assert calls == [(63, 512)]
    with pytest.raises(ValueError, match="token_logps needs targets"):
        model(idx, token_logps=True)


# --- distillation ----------------------------------------------------------------------------------


def _ref_distill(h, w, t, y, T, alpha):
    from tenali_model.posttrain.distill import distill_loss
    total, _, stats = distill_loss(F.linear(h, w), t, y, T, alpha)
    return total, stats["kl"], stats["ce"]


@pytest.mark.parametrize("chunk_rows", [None, 7])
@pytest.mark.parametrize("T,alpha", [(2.5, 0.7), (1.0, 0.0), (3.0, 1.0)])
def test_distill_loss_matches_the_logits_version_and_its_gradients(chunk_rows, T, alpha):
    torch.manual_seed(6)
    h, w, t = torch.randn(50, 16), torch.randn(30, 16), torch.randn(50, 30) * 2
    y = torch.randint(0, 30, (50,))
    y[[2, 3, 49]] = -1
    outs = []
    for fn in (_ref_distill, lambda *a: linear_distill_loss(*a, chunk_rows=chunk_rows)):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        total, kl, ce = fn(hh, ww, t, y, T, alpha)
        (2.0 * total).backward()
        outs.append((total.detach(), kl, ce, hh.grad, ww.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # without autograd: the values alone
        for a, b in zip(outs[0][:3], linear_distill_loss(h, w, t, y, T, alpha, chunk_rows=chunk_rows)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_distill_loss_takes_bf16_teacher_logits_and_names_bad_shapes():
    torch.manual_seed(7)
    h, w, t, y = torch.randn(20, 8), torch.randn(12, 8), torch.randn(20, 12), torch.randint(0, 12, (20,))
    ref = _ref_distill(h, w, t.bfloat16().float(), y, 2.0, 0.5)
    got = linear_distill_loss(h, w, t.bfloat16(), y, 2.0, 0.5)
    torch.testing.assert_close(got[0], ref[0])
    with pytest.raises(ValueError, match=r"teacher_logits \[N, V\]"):
        linear_distill_loss(h, w, t[:, :5], y, 2.0, 0.5)
