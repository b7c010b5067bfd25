"""The model's CUDA paths against its CPU ones: run on a GPU (bench/device_checks.sh runs this file
first on a lent machine), skipped elsewhere.

On CUDA the model takes paths of its own: F.rms_norm's fused kernel, grouped-query attention by
repeating keys and values (the masked kernel has no GQA mode), flash / memory-efficient SDPA, bf16
autocast, fused AdamW on the GPU, pinned-memory batches. The CPU suite cannot reach them; these tests
compare each against the CPU float32 result on the same weights and inputs. `CUDA_TESTS_DEVICE=cpu`
runs the same bodies on the CPU, which checks the tests themselves where no GPU is lent.
"""

import dataclasses
import json
import os

import pytest
import torch
import torch.nn.functional as F

from tenali_model.config import preset
from tenali_model.loss import linear_cross_entropy, linear_distill_loss, linear_token_logps
from tenali_model.model import KVCache, SlotKVCache, Transformer, decode_slots
from tm_helpers import tiny_config

DEVICE = os.environ.get("CUDA_TESTS_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (bench/device_checks.sh runs these on a lent one)")


@pytest.fixture(autouse=True)
def _exact_fp32():
    """float32 matmuls in full precision on the GPU for the comparisons (the trainer turns TF32 on)."""
    if DEVICE == "cuda":
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cuda.matmul.allow_tf32 = before
    else:
        yield


def _pair(**kw):
    """The same randomly initialised demo-shaped model (GQA: 4 heads, 2 KV heads) on CPU and DEVICE."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("demo"), **kw)
    cpu = Transformer(cfg)
    dev = Transformer(cfg).to(DEVICE)
    dev.load_state_dict(cpu.state_dict())
    return cfg, cpu, dev


def _grads(model):
    return {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("packed", [False, True])  # packed documents: the masked kernel, keys repeated
def test_training_loss_and_gradients_match_the_cpu(packed):
    cfg, cpu, dev = _pair()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (4, 64), generator=g)
    y = x.roll(-1, 1)
    doc_ids = (torch.arange(64) >= 40).long().expand(4, 64) if packed else None
    losses = []
    for model, device in ((cpu, "cpu"), (dev, DEVICE)):
        loss = model(x.to(device), y.to(device), z_loss=1e-3, with_logits=False,
                     doc_ids=None if doc_ids is None else doc_ids.to(device))[1]
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    ref, got = _grads(cpu), _grads(dev)
    for name, g_ref in ref.items():
        torch.testing.assert_close(got[name], g_ref, rtol=1e-3, atol=1e-5, msg=name)


def test_bf16_autocast_step_is_close_to_float32():
    cfg, cpu, dev = _pair()
    x = torch.randint(0, cfg.vocab_size, (4, 64), generator=torch.Generator().manual_seed(2))
    y = x.roll(-1, 1)
    ref = cpu(x, y, with_logits=False)[1]
    ref.backward()
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        fused = dev(x.to(DEVICE), y.to(DEVICE), with_logits=False)[1]
        plain = dev(x.to(DEVICE), y.to(DEVICE))[1]  # the logits path under the same autocast
    fused.backward()
    assert fused.dtype == torch.float32
    assert fused.item() == pytest.approx(plain.item(), rel=1e-2)
    assert fused.item() == pytest.approx(ref.item(), rel=2e-2)
    got = _grads(dev)
    for name, g_ref in _grads(cpu).items():
        assert (got[name] - g_ref).norm() <= 0.05 * g_ref.norm() + 1e-6, name


def test_bf16_projections_of_a_frozen_model_change_nothing_under_autocast_on_the_device():
    """DPO's reference (and LoRA's frozen base) hold their projections in bf16 under bf16 compute, on
    the claim that autocast rounds them so at each use anyway: the same log-probabilities, bit for bit."""
    from tenali_model.posttrain.loop import projections_to_bf16

    cfg, _, dev = _pair()
    x = torch.randint(0, cfg.vocab_size, (4, 64), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    y = x.roll(-1, 1)
    with torch.no_grad(), torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        held32 = dev(x, y, token_logps=True)[1]
        held16 = projections_to_bf16(dev)(x, y, token_logps=True)[1]
    assert dev.layers[0].attn.wq.weight.dtype == torch.bfloat16
    assert torch.equal(held16, held32)


def test_chunked_heads_match_the_reference_on_the_device():
    torch.manual_seed(3)
    h = torch.randn(300, 64, device=DEVICE, requires_grad=True)
    w = torch.randn(500, 64, device=DEVICE, requires_grad=True)
    t = torch.randint(0, 500, (300,), device=DEVICE)
    t[:7] = -1
    logits = F.linear(h, w).float()
    ref = F.cross_entropy(logits, t, ignore_index=-1)
    got = linear_cross_entropy(h, w, t, chunk_rows=128)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    ref_lp = torch.where(t != -1, torch.log_softmax(logits, -1).gather(1, t.clamp(min=0)[:, None])[:, 0], 0.0)
    torch.testing.assert_close(linear_token_logps(h, w, t, chunk_rows=128), ref_lp, rtol=1e-5, atol=1e-4)
    teacher = torch.randn(300, 500, device=DEVICE).bfloat16()
    loss, kl, ce = linear_distill_loss(h, w, teacher, t, 2.0, 0.5, chunk_rows=128)
    (gh, gw) = torch.autograd.grad(loss, (h, w))
    log_ps, log_pt = torch.log_softmax(logits / 2.0, -1), torch.log_softmax(teacher.float() / 2.0, -1)
    keep = t != -1
    ref_loss = (0.5 * 4.0 * (log_pt.exp() * (log_pt - log_ps)).sum(-1)
                + 0.5 * F.cross_entropy(logits, t.clamp(min=0), reduction="none"))[keep].sum()
    rh, rw = torch.autograd.grad(ref_loss, (h, w))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gh, rh, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-4)


def test_slot_decoding_matches_the_cached_forward_on_the_device():
    cfg, _, dev = _pair()
    dev.eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    slots = SlotKVCache(cfg, 4, cfg.max_seq_len, DEVICE, torch.float32)
    cache = KVCache(cfg, 1, cfg.max_seq_len, DEVICE, torch.float32)
    with torch.inference_mode():
        dev(prompt, cache=slots.view(2), start_pos=0)
        dev(prompt, cache=cache, start_pos=0)
        token = torch.tensor([5], device=DEVICE)
        for pos in range(16, 24):
            a = decode_slots(dev, token, slots, torch.tensor([2], device=DEVICE), torch.tensor([pos], device=DEVICE))
            b = dev(token[:, None], cache=cache, start_pos=pos)[0][:, -1]
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
            token = a.argmax(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_decoding_matches_slot_decoding_on_the_device(dtype):
    """The engine's `--cuda-graph` step: `StaticDecoder` captures `decode_static` once and replays it
    (on CUDA; eager under CUDA_TESTS_DEVICE=cpu); each replay gives the live rows decode_slots'
    logits on a twin cache, with free slots beside them and a row joining mid-way."""
    _graph_matches_slots(dtype, compile=False)


def _graph_matches_slots(dtype, compile: bool):
    from tenali_model.serve.graph import StaticDecoder

    cfg, _, dev = _pair()
    dev = dev.to(dtype).eval()
    g = torch.Generator().manual_seed(5)
    prompts = {3: torch.randint(0, cfg.vocab_size, (1, 16), generator=g).to(DEVICE),
               1: torch.randint(0, cfg.vocab_size, (1, 40), generator=g).to(DEVICE)}
    caches = [SlotKVCache(cfg, 4, cfg.max_seq_len, DEVICE, dtype) for _ in range(2)]
    decoder = StaticDecoder(dev, caches[0], compile=compile)
    assert decoder.capture == (DEVICE == "cuda")
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 5e-2}
    with torch.inference_mode():
        live = {3: [16, 7]}  # slot -> [next position, next token]
        for cache in caches:
            dev(prompts[3], cache=cache.view(3), start_pos=0)
        for step in range(8):
            if step == 3:  # a request joins between steps
                for cache in caches:
                    dev(prompts[1], cache=cache.view(1), start_pos=0)
                live[1] = [40, 11]
            slots = sorted(live)
            tokens, positions = [live[s][1] for s in slots], [live[s][0] for s in slots]
            got = decoder(slots, tokens, positions)
            as_tensor = lambda v: torch.tensor(v, device=DEVICE)  # noqa: E731
            want = decode_slots(dev, as_tensor(tokens), caches[1], as_tensor(slots), as_tensor(positions))
            torch.testing.assert_close(got, want, **tol)
            for s, nxt in zip(slots, want.argmax(-1).tolist()):  # both caches get the same tokens
                live[s] = [live[s][0] + 1, nxt]
    assert decoder.replays == (8 if DEVICE == "cuda" else 0)


def test_the_engine_with_a_cuda_graph_gives_the_tokens_of_the_plain_engine():
    """`tenali serve --cuda-graph` end to end in the engine: the capture happens on the engine's own
    thread when it starts; requests of several lengths join and leave 3 slots; greedy tokens equal
    the plain engine's (float32, TF32 off)."""
    from tenali_model.serve.engine import Engine, SamplingParams, generate_ids

    cfg, _, dev = _pair()
    dev.eval()
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in (5, 17, 40, 9, 23)]
    params = SamplingParams(max_tokens=16, temperature=0)
    out = {}
    for graph in (False, True):
        with Engine(dev, max_batch=3, cuda_graph=graph) as engine:
            out[graph] = generate_ids(engine, prompts, params, timeout=120)
            if graph:
                # the capture and one replay happen when the engine's thread starts
                assert engine._static.replays == (engine.steps + 1 if DEVICE == "cuda" else 0)
    assert out[True] == out[False]


def test_the_trainer_trains_and_resumes_on_the_device(shards, tmp_path):
    from tenali_model import train

    cfg = tiny_config(shards, tmp_path / "run", device=DEVICE, dtype="bfloat16" if DEVICE == "cuda" else "float32",
                      steps=20, eval_every=10, ckpt_every=10, num_threads=0)
    train.train(cfg, stop_at=10)  # "killed" after its checkpoint at step 10
    summary = train.train(cfg)  # resumes
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # resumed, not restarted
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert losses[-1] < losses[0]
    assert summary["step"] == 20 and summary["complete"] and summary["resumed_from_step"] == 10


def test_the_compiled_cuda_graph_step_matches_slot_decoding_on_the_device():
    """`--cuda-graph --compile`: the graph captures the step torch.compile made (Triton kernels on a
    GPU; C++ under CUDA_TESTS_DEVICE=cpu), in bf16 as `tenali serve` loads a model on a GPU; the same
    check as the eager graph's. Last in the file: compiling is the slowest test, and the device run's
    tests stage has a time limit."""
    _graph_matches_slots(torch.bfloat16, compile=True)


def test_torchrun_trains_on_the_device_and_resumes(shards, tmp_path):
    """`torchrun -m tenali_model.train --config ...` as a user starts it, one process on the device (one GPU
    gives one rank: NCCL refuses two ranks on one GPU, so DDP and FSDP across GPUs need a machine of
    several); then the same command with more steps resumes from its last checkpoint."""
    import subprocess

    from tm_helpers import PYTHON, REPO_ROOT, subprocess_env

    out, cfg_path = tmp_path / "run", tmp_path / "train.json"

    def torchrun(steps: int) -> list[dict]:
        tiny_config(shards, out, device=DEVICE, dtype="bfloat16" if DEVICE == "cuda" else "float32", steps=steps,
                    log_every=2, eval_every=4, ckpt_every=4, num_threads=0).to_json(cfg_path)
        proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                               "-m", "tenali_model.train", "--config", str(cfg_path)],
                              cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    first = torchrun(8)
    assert [r["step"] for r in first if r["kind"] == "train"] == [2, 4, 6, 8]
    records = torchrun(12)
    train_rows = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10, 12]
    assert train_rows[:4] == [r for r in first if r["kind"] == "train"]  # resumed at 8: its rows kept, not rewritten
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
