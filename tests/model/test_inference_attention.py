"""Inference runs attention without cuDNN's kernel on CUDA (`model.inference_attention`): on an H200 under
torch 2.11, cuDNN's plan for each new shape cost 40-62 ms a call, and decoding meets a new shape every
step (docs/benchmarks.md, "GPU figures"). These check the switch itself and that every inference path,
and no training path, runs its attention inside it."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from tm_helpers import train_sentencepiece

import tenali_model.evaluate_chat as evaluate_chat_module
import tenali_model.generate as generate_module
import tenali_model.model as model_module
import tenali_model.serve.graph as graph_module
from tenali_model.config import preset
from tenali_model.evaluate_chat import assistant_loss, completion_logprobs
from tenali_model.generate import generate
from tenali_model.model import KVCache, SlotKVCache, Transformer, decode_slots, inference_attention
from tenali_model.serve.graph import StaticDecoder
from tenali_model.tokenizer import load_tokenizer


def test_on_cuda_it_turns_off_cudnn_attention_alone_and_restores_it():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with inference_attention(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_elsewhere_it_changes_nothing():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with inference_attention(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


@pytest.fixture
def calls(monkeypatch):
    """Whether each SDPA call ran inside `inference_attention` (patched where the model and the CUDA-graph
    decoder look it up, as a context that marks its inside)."""
    state = {"inside": 0}
    seen: list[bool] = []

    @contextlib.contextmanager
    def marked(device):
        state["inside"] += 1
        try:
            yield
        finally:
            state["inside"] -= 1

    real = F.scaled_dot_product_attention

    def sdpa(*args, **kwargs):
        seen.append(state["inside"] > 0)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, "inference_attention", marked)
    monkeypatch.setattr(graph_module, "inference_attention", marked)
    monkeypatch.setattr(evaluate_chat_module, "inference_attention", marked)
    monkeypatch.setattr(generate_module, "inference_attention", marked)
    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", sdpa)
    return seen


@pytest.fixture
def model():
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.vocab_size, cfg.max_seq_len = 64, 32
    return Transformer(cfg).eval()


def test_training_keeps_pytorchs_choice(model, calls):
    idx = torch.randint(0, 64, (2, 16))
    model(idx, idx, with_logits=False)[1].backward()
    model(idx, doc_ids=torch.zeros_like(idx))
    assert calls and not any(calls)


def test_every_inference_path_runs_inside_it(model, calls):
    cfg = model.config
    with torch.no_grad():
        cache = KVCache(cfg, 1, cfg.max_seq_len, "cpu", torch.float32)
        model(torch.randint(0, 64, (1, 5)), cache=cache, start_pos=0)  # a prefill
        model(torch.tensor([[3]]), cache=cache, start_pos=5)  # a cached step
        generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=3, temperature=0.0)
        generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=3, temperature=0.0, use_cache=False)
        slots = SlotKVCache(cfg, 2, cfg.max_seq_len, "cpu", torch.float32)
        for s in (0, 1):
            model(torch.tensor([[1, 2, 3]]), cache=slots.rows([s]), start_pos=0)
        decode_slots(model, torch.tensor([4, 5]), slots, torch.tensor([0, 1]), torch.tensor([3, 3]))
        static = SlotKVCache(cfg, 2, cfg.max_seq_len, "cpu", torch.float32)
        StaticDecoder(model, static, capture=False)([0], [4], [0])
    assert len(calls) > 5 * cfg.n_layers and all(calls)


def test_chat_evaluation_runs_inside_it(tmp_path, calls):
    """Its forwards have no cache, but a new length for each conversation or completion."""
    train_sentencepiece(tmp_path / "tokenizer.model")
    tok = load_tokenizer(tmp_path / "tokenizer.model")
    cfg = preset("tiny")
    cfg.vocab_size = tok.vocab_size
    model = Transformer(cfg).eval()
    chat = [{"role": "user", "content": "What did Apple close at?"}, {"role": "assistant", "content": "$189.25."}]
    assistant_loss(model, tok, [chat])
    completion_logprobs(model, tok, chat[:1], ["$189.25.", "$190.00."])
    assert len(calls) == 3 * cfg.n_layers and all(calls)


def test_the_shape_benchmark_runs_on_a_cpu(capsys):
    """bench/bench_sdpa_shapes.py, which measured the cost on a GPU, keeps working between GPU loans."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_sdpa_shapes.py"
    spec = importlib.util.spec_from_file_location("bench_sdpa_shapes", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--preset", "demo", "--device", "cpu", "--dtype", "float32", "--lengths", "2"]) == 0
    out = capsys.readouterr().out
    for case in ("decode, 1 query", "decode, 4 rows, mask", "prefill, causal"):
        assert f"{case:22s} new shape: default / inference_attention" in out
    assert out.count("inference_attention  ") == 3  # one timed row per case for each way
