"""Decoding steps replayed from a CUDA graph: the engine's step for small models on a GPU.

A small model's decoding step is a few hundred tiny kernels (the 51M preset dispatches ~650 operations
per token); launched one by one from Python, the launches, not the GPU, set the pace (the 51M seed
reports ~260 tok/s on an H100). `decode_static` gives the step fixed shapes (every slot, the cache's
whole length under a mask) and no reads back to the host, so it can be captured once as a CUDA graph
and replayed each step for the cost of one launch plus copying the step's tokens and positions in.

A replayed graph still runs every kernel of the step, each a few microseconds on the GPU however
little it computes. `compile=True` first passes the step through `torch.compile` (inductor), which
fuses its element-wise work (norms, RoPE, masks, residuals) into a few kernels per layer; the graph
then captures the compiled step (`tenali serve --cuda-graph --compile`). Compiling costs once, at the engine's
start (`warm`), not in a request (on a 1-thread CPU 4-5 s for the demo model, 18.7 s for the 51M).

On the CPU there is nothing to capture: the same static step runs eagerly, or compiled (the CPU tests
check its tokens against the engine's usual step). It computes every slot at every position, so it is
slower than `decode_slots` there; `tenali serve --cuda-graph` is for CUDA devices.
"""

from __future__ import annotations

import time

import torch

from ..model import SlotKVCache, Transformer, decode_static, inference_attention


class StaticDecoder:
    """`decode_static` over a cache's slots with its inputs in fixed buffers; captured as a CUDA graph
    on first use when the cache lives on a CUDA device (and `capture` is not False); compiled with
    `torch.compile` first when `compile` is True."""

    def __init__(self, model: Transformer, cache: SlotKVCache, capture: bool | None = None,
                 compile: bool = False):
        self.model, self.cache = model, cache
        self.compiled = compile
        # Fixed shapes (dynamic=False) and one graph for the whole step (fullgraph: a break would put
        # Python back between kernels). The new keys and values go into the cache in place (decode_static
        # indexes the cache whole; through a layer's view, inductor would copy the cache every step).
        step = lambda tokens, positions: decode_static(model, tokens, positions, cache)  # noqa: E731
        self._fn = torch.compile(step, fullgraph=True, dynamic=False) if compile else step
        device = cache.k.device
        self.capture = device.type == "cuda" if capture is None else capture
        if self.capture and device.type != "cuda":
            raise ValueError(f"CUDA graphs need the cache on a CUDA device, not {device}")
        self._inputs = torch.zeros(2, cache.slots, dtype=torch.long, device=device)  # tokens; positions
        self._graph: torch.cuda.CUDAGraph | None = None
        self._logits: torch.Tensor | None = None
        self.replays = 0

    def __call__(self, slots: list[int], tokens: list[int], positions: list[int]) -> torch.Tensor:
        """Logits [len(slots), V] (float32) after feeding tokens[i] at positions[i] into slot slots[i];
        every other slot must be free (it decodes a dummy token at position 0)."""
        host = [[0] * self.cache.slots, [0] * self.cache.slots]
        for s, t, p in zip(slots, tokens, positions):
            host[0][s], host[1][s] = t, p
        self._inputs.copy_(torch.tensor(host, dtype=torch.long))
        if not self.capture:
            logits = self._step()
        else:
            if self._graph is None:
                self._record()
            self._graph.replay()
            self.replays += 1
            logits = self._logits
        return logits[torch.tensor(slots, dtype=torch.long, device=logits.device)]  # a copy: the next replay overwrites

    @property
    def kind(self) -> str:
        """What runs each step, for logs and benchmarks: "compiled, CUDA graph", "CUDA graph",
        "compiled, eager" or "eager"."""
        return ", ".join(["compiled"] * self.compiled + ["CUDA graph" if self.capture else "eager"])

    def warm(self) -> float:
        """Compile and capture now (what the first step would otherwise do); seconds taken. Every slot
        must be free: each decodes a dummy token at position 0, which its prefill overwrites."""
        started = time.perf_counter()
        self([], [], [])
        return time.perf_counter() - started

    def _step(self) -> torch.Tensor:
        # The kernels chosen here are the ones compiled and captured: the engine's other paths' (outside
        # the compiled region: torch.compile traces the attention with the backends set when it runs).
        with inference_attention(self._inputs.device):
            return self._fn(self._inputs[0], self._inputs[1])

    def _record(self) -> None:
        """Warm up on a side stream (kernel choices, cuBLAS workspaces), then capture one step.

        Both write the current step's keys and values, which the replay writes again (the same
        values): running the step more than once is harmless."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the server's other threads never touch CUDA, and must not fail the capture if they did
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._logits = self._step()
        self._graph = graph
