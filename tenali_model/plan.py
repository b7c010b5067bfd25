"""Back-of-the-envelope planning for a training run: memory per GPU, time, GPU-hours and cost.

    from tenali_model.plan import plan, render
    print(render(plan("7b", tokens=100e9, gpus=8, gpu="h100", mfu=0.4, price_per_gpu_hour=2.5)))
    tenali plan --config 7b --tokens 100e9 --gpus 8 --gpu h100 [--mfu 0.4] [--price 2.5]

Standard library only (no torch), so planning runs anywhere. The trainer uses `flops_per_token` and
`peak_bf16_flops` from here to report MFU.

FLOPs. Model FLOPs per trained token (forward + backward), the PaLM / nanoGPT / torchtitan convention:

    flops_per_token = 6 * N + 12 * n_layers * dim * seq_len

N counts the parameters a token is multiplied by: all parameters minus the token-embedding lookup
(no FLOPs), with the lm head's V x dim counted whether it is tied to that table or not, since its
matmul runs either way (nanoGPT's count for a tied head, torchtitan's for an untied one). Until
2026-12-03 a tied head was left out as PaLM does, which gave the same computation fewer FLOPs when
tied and understated MFU for small models, whose head is a large share: the count now is 1.09x the
old one for the 1B preset, 1.31x for the 125M, 1.94x for the 51M (whose 50k x 512 head has about as
many parameters as its blocks). The second
term is the attention score and value matmuls (QK^T and AV: 2 * 2 * seq_len * dim per token and layer
in the forward pass, times 3 for forward + backward), counted over the full causal square as PaLM does.
Recomputation (activation checkpointing) is not model FLOPs: MFU = achieved model FLOP/s / peak.

Memory per GPU (bytes; P = parameters, P/g = sharded over g GPUs). The trainer keeps float32 master
weights and AdamW state and computes in bfloat16 (autocast under DDP, FSDP2's param_dtype under FSDP):

    weights      4P float32 master       (fsdp: 4P/g)
    grads        4P float32               (fsdp: 4P/g)
    adam         8P exp_avg + exp_avg_sq  (fsdp: 8P/g)
    transient    eager loss: its head gradient, computed in the forward pass (4*vocab*dim float32),
                 its bf16 copies of the head weight (2*vocab*dim) and of the final norm's output (2*dim
                 per token), and one chunk of its logits (8 bytes an element: bfloat16, float32,
                 bfloat16 gradient; config.LOSS_CHUNK_ELEMENTS at most); compiled loss: none (below);
                 the float32 residual stream the forward pass returns through (4*dim per token); plus
                 ddp:  2P bfloat16 copies of the weights that autocast makes and autograd keeps
                       until the backward pass
                 fsdp: at the forward pass's end the root's (embedding, final norm, head) unsharded
                       bfloat16 parameters and their all-gather buffer, the blocks resharded; through
                       the backward ("B" below) the root's and two blocks' (current + prefetched)
                       unsharded parameters and one block's float32 gradient before its reduce-scatter;
                       its loss needs no copy of the head weight, bf16 already
    activations  tokens per micro-batch (micro_batch * seq_len) times, per token,
                   per block  eager:    34*dim + 8*ffn_hidden + 4*n_heads   (bf16 matmul inputs and
                                        outputs, float32 residual stream and norms, fused attention's
                                        log-sum-exp; the GQA keys and values are saved after expansion
                                        to n_heads)
                              compiled: 20*dim + 6*ffn_hidden + 4*n_heads + 8  (inductor recomputes the
                                        norms and activations in backward instead of keeping them)
                   head       eager:    10*dim   (final norm and the gradient of its output: the
                                        trainer's fused, chunked cross-entropy, `loss.py`, keeps no
                                        [tokens, vocab] logits)
                              compiled: 2*vocab + 4*dim + 12   (inside torch.compile the model runs the
                                        plain loss, which inductor fuses; it keeps the bf16 logits)
                 with activation checkpointing a block keeps only its float32 input (4*dim) and the
                 compiled head 2*vocab + 2*dim + 12; the backward pass recomputes one block at a time
                 ("recompute": one block's activations, and its backward's gradients, 12*ffn_hidden +
                 24*dim per token, measured in float32).
                 "compiled" is torch.compile of the whole model (`compile` under single or DDP); under
                 FSDP the trainer compiles each block, so the blocks are compiled and the head eager.
                 float32 compute (a CPU run, dtype not bfloat16): per block 40*dim + 16*ffn_hidden +
                 4*n_heads + 8, head 12*dim + 4 (eager, measured; compiled is taken as eager, plus
                 the float32 logits a compiled model's plain loss keeps, 4*vocab), no weight copies,
                 and the fused loss's head gradient and one float32 chunk of logits.
The per-token coefficients were measured on this model's saved tensors, eager, compiled and float32
(`test_model_plan.py` checks them against torch's saved-tensor hooks on the CPU).

The peak is not the sum of these. Without gradient accumulation the gradients are made while the
backward pass frees the activations, and the live bytes move linearly between the forward pass's
end (activations, no gradients yet) and the backward's (gradients, no activations). With G the grads
(held through the forward pass only when grad_accum > 1) and B the backward's transient (under FSDP
its unsharded block, bf16 params and float32 grad; none otherwise: autocast's weight copies go when
its context exits, but for those autograd saved, counted in the transient):

    peak = weights + adam (+ G under DDP: its all-reduce buckets, which the gradients are views
                           into, stay allocated between steps, and the trainer zeroes the gradients
                           in place, so they stay views when accumulating)
           + max(transient + activations (+ G),          the forward pass's end
                 B + activations + recompute (+ G),      the backward's start
                 G + B + recompute)                      the backward's end
                                             (the G in parentheses: accumulating, but under DDP)

Inside torch.compile the loss adds no transient: its logits' gradient takes the saved logits' place.
Checked against one H200 (bench/bench_mfu.py, max allocated, docs/benchmarks.md): 1B compiled at 8 x 2048,
37.8 GiB planned, 38.0 measured; 125M compiled, 8.3 against 8.4; 7B with activation checkpointing at
1 x 4096, eager, 104.4 against 102.8 (until 2026-12-04 the plan added everything up and said 51.9,
10.2 and 119.3). On the CPU (`test_model_plan.py` and `memory_probe_ranks.py` beside it, torch's
MemTracker and FSDPMemTracker): one process within 1% without checkpointing, DDP on two gloo ranks
within 0.1%, FSDP2 up to 10% high, and checkpointed runs up to 12% high (the recomputed block's activations go as its gradients come, which
this adds up whole), never low. Allocator fragmentation, the CUDA context and NCCL buffers are not modelled: `fits`
leaves USABLE_FRACTION of the card for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .config import (FSDP_AUTO_MIN_PARAMS, LOSS_CHUNK_ELEMENTS, ModelConfig, num_embedding_params,
                     num_params, preset)

GIB = 1024 ** 3
USABLE_FRACTION = 0.9  # of a GPU's memory; the rest for the CUDA context, NCCL, fragmentation


@dataclass(frozen=True)
class GPU:
    name: str
    peak_bf16_flops: float  # dense (no structured sparsity), per GPU, FLOP/s
    memory_gib: float  # what the driver reports as total


# SXM parts, from NVIDIA's data sheets (dense bf16 = half the quoted "with sparsity" figure).
GPUS: dict[str, GPU] = {
    "h100": GPU("NVIDIA H100 SXM 80GB", 989.4e12, 79.6),
    "h200": GPU("NVIDIA H200 SXM 141GB", 989.4e12, 140.4),
    "a100": GPU("NVIDIA A100 SXM 80GB", 312e12, 80.0),
}


DEFAULT_MFU = 0.4  # what `tenali plan` assumes where nothing was measured
# Measured here on one GPU, bf16, torch.compile (bench/bench_mfu.py; docs/benchmarks.md, "GPU figures"): what
# `tenali plan` uses by default for these (gpu, preset) pairs when the run compiles.
MEASURED_MFU: dict[tuple[str, str], tuple[float, str]] = {
    ("h200", "1b"): (0.555, "bench_mfu.py on one H200, bf16, compiled, 8 x 2048, torch 2.11, 2026-12-04"),
    ("h200", "125m"): (0.451, "bench_mfu.py on one H200, bf16, compiled, 8 x 2048, torch 2.11, 2026-12-04"),
}


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from its name (torch.cuda.get_device_name()), or None when
    unknown (CPUs, other GPUs): MFU is then not reported."""
    name = device_name.upper()
    if "H200" in name:  # H200 SXM and GH200 989 TF; H200 NVL (PCIe card) 835 TF
        return 835e12 if "NVL" in name else 989.4e12
    if "H100" in name:  # H100 SXM 989 TF; H100 NVL 835 TF; H100 PCIe 756 TF
        if "NVL" in name:
            return 835e12
        return 756e12 if "PCIE" in name else 989.4e12
    if "A100" in name:  # every A100 variant: 312 TF
        return 312e12
    return None


def get_gpu(name: str) -> GPU:
    """A GPUS entry by its key (case-insensitive)."""
    if name.lower() not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; known: {sorted(GPUS)}")
    return GPUS[name.lower()]


# --- FLOPs ---------------------------------------------------------------------------------------

def non_embedding_params(cfg: ModelConfig) -> int:
    """Everything but the token-embedding table (and so, when tied, the head that shares it)."""
    return num_params(cfg) - num_embedding_params(cfg)


def matmul_params(cfg: ModelConfig) -> int:
    """N of the FLOP formula: the non-embedding parameters plus the lm head, tied or not."""
    return non_embedding_params(cfg) + (cfg.vocab_size * cfg.dim if cfg.tie_embeddings else 0)


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> int:
    """Model FLOPs (forward + backward) per trained token: 6 * N + 12 * n_layers * dim * seq_len."""
    seq_len = seq_len or cfg.max_seq_len
    return 6 * matmul_params(cfg) + 12 * cfg.n_layers * cfg.dim * seq_len


def mfu(tokens_per_sec: float, cfg: ModelConfig, seq_len: int, peak_flops_total: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all GPUs used."""
    return tokens_per_sec * flops_per_token(cfg, seq_len) / peak_flops_total


# --- memory --------------------------------------------------------------------------------------

def layer_params(cfg: ModelConfig) -> int:
    """Parameters of one Transformer block."""
    return (num_params(cfg) - num_embedding_params(cfg) * (1 if cfg.tie_embeddings else 2)
            - cfg.dim) // cfg.n_layers


def compile_scope(compile: bool, parallelism: str) -> str | None:
    """What the trainer's `compile` compiles: the whole model ("model", single or DDP), each block
    ("blocks", FSDP), or nothing (None). train.py decides by this too, so plan and run agree."""
    if not compile:
        return None
    return "blocks" if parallelism == "fsdp" else "model"


def block_bytes_per_token(cfg: ModelConfig, compiled: bool = False, bf16: bool = True) -> int:
    """Saved activations of one Transformer block per token (see the module doc)."""
    if not bf16:  # float32 compute (CPU runs): measured eager; compiled is taken to keep no less
        return 40 * cfg.dim + 16 * cfg.ffn_hidden + 4 * cfg.n_heads + 8
    if compiled:
        return 20 * cfg.dim + 6 * cfg.ffn_hidden + 4 * cfg.n_heads + 8
    return 34 * cfg.dim + 8 * cfg.ffn_hidden + 4 * cfg.n_heads


def backward_temp_bytes(cfg: ModelConfig) -> int:
    """Per token, the gradients a block's backward pass holds at once (the MLP's and the residual's),
    measured in float32 (MemTracker, `test_model_plan.py`) and taken for bf16 too."""
    return 12 * cfg.ffn_hidden + 24 * cfg.dim


def activation_bytes_per_token(cfg: ModelConfig, activation_checkpointing: bool = False,
                               compiled: str | None = None, bf16: bool = True) -> int:
    """Bytes of saved activations per token of a micro-batch (see the module doc); `compiled` as
    `compile_scope` gives it; `bf16` False: float32 compute."""
    if compiled not in (None, "model", "blocks"):
        raise ValueError(f"compiled must be None, 'model' or 'blocks', got {compiled!r}")
    block = block_bytes_per_token(cfg, compiled is not None, bf16)
    if not bf16:
        head = 12 * cfg.dim + 4 + (4 * cfg.vocab_size if compiled == "model" else 0)
    elif compiled == "model":
        head = 2 * cfg.vocab_size + (2 if activation_checkpointing else 4) * cfg.dim + 12
    else:
        head = 10 * cfg.dim
    if activation_checkpointing:  # the block being recomputed is Memory.recompute, in the backward pass
        return cfg.n_layers * 4 * cfg.dim + head
    return cfg.n_layers * block + head


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU."""

    parallelism: str  # "single" (one GPU), "ddp" or "fsdp"
    gpus: int
    activation_checkpointing: bool
    weights: float
    grads: float
    optimizer: float
    transient: float  # beside the activations, at the forward pass's end
    activations: float  # saved by the forward pass
    backward_transient: float = 0.0  # through the backward pass (FSDP's unsharded block)
    recompute: float = 0.0  # activation checkpointing: the block being recomputed, in the backward pass
    accumulating: bool = False  # grad_accum > 1: the gradients live through every forward pass
    compiled: str | None = None  # compile_scope

    @property
    def total(self) -> float:
        """The peak: the state plus the most of the forward pass's end, the backward's start and its end
        (module doc)."""
        # DDP's all-reduce buckets, which its gradients are views into, stay allocated between steps: the
        # gradients are held all along (the trainer zeroes them in place, so accumulating adds nothing)
        buckets = self.grads if self.parallelism == "ddp" else 0.0
        held = self.grads if self.accumulating and not buckets else 0.0
        forward_end = self.transient + self.activations + held
        backward_start = self.backward_transient + self.activations + self.recompute + held
        backward_end = max(self.grads, held) + self.backward_transient + self.recompute
        return self.weights + self.optimizer + buckets + max(forward_end, backward_start, backward_end)


def memory_per_gpu(cfg: ModelConfig, *, gpus: int, parallelism: str, micro_batch: int, seq_len: int,
                   activation_checkpointing: bool = False, grad_accum: float = 1,
                   compile: bool = False, bf16: bool = True) -> Memory:
    """Estimated peak memory per GPU of one training step (see the module doc for the model); `bf16`
    False: float32 compute, as on a CPU (no weight copies; twice the bytes for what is kept)."""
    if parallelism not in ("single", "ddp", "fsdp"):
        raise ValueError(f"parallelism must be 'single', 'ddp' or 'fsdp', got {parallelism!r}")
    P = num_params(cfg)
    shards = gpus if parallelism == "fsdp" else 1
    compiled = compile_scope(compile, parallelism)
    backward = 0.0
    param_bytes = 2 if bf16 else 4  # a compute copy of a weight (FSDP's unsharded parameters)
    if parallelism != "fsdp":
        transient = 2 * P if bf16 else 0  # autocast's copies
    else:
        # The forward pass ends with the blocks resharded and the root gathered (its parameters and the
        # all-gather buffer); the backward gathers the root and two blocks and reduce-scatters one
        # block's float32 gradient.
        root = P - cfg.n_layers * layer_params(cfg)
        transient = 2 * param_bytes * root
        backward = param_bytes * (root + 2 * layer_params(cfg)) + 4 * layer_params(cfg)
    tokens = micro_batch * seq_len
    chunk = min(LOSS_CHUNK_ELEMENTS, tokens * cfg.vocab_size)
    if not bf16:  # the fused loss in float32: its head gradient and one chunk of logits, no copies
        transient += 4 * cfg.vocab_size * cfg.dim + 4 * chunk
    elif compiled != "model":  # the fused loss; inside a compiled model the fused plain loss adds none
        # its head gradient (float32) and, but under FSDP, whose head weight is bf16 already, a bf16 copy
        # of the weight
        head = (4 if parallelism == "fsdp" else 6) * cfg.vocab_size * cfg.dim
        transient += head + 2 * tokens * cfg.dim + 8 * chunk
    acts = tokens * activation_bytes_per_token(cfg, activation_checkpointing, compiled, bf16)
    transient += 4 * tokens * cfg.dim  # the float32 residual stream the forward pass returns through
    # with checkpointing, the block being recomputed: its activations and its backward's gradients
    recompute = (tokens * (block_bytes_per_token(cfg, compiled is not None, bf16) + backward_temp_bytes(cfg))
                 if activation_checkpointing else 0)
    return Memory(parallelism, gpus, activation_checkpointing, weights=4 * P / shards,
                  grads=4 * P / shards, optimizer=8 * P / shards, transient=transient, activations=acts,
                  backward_transient=backward, recompute=recompute, accumulating=grad_accum > 1,
                  compiled=compiled)


def memory_check(cfg: ModelConfig, *, parallelism: str, world_size: int, local_processes: int, micro_batch: int,
                 seq_len: int, activation_checkpointing: bool, available: float, where: str,
                 grad_accum: int = 1, compile: bool = False, bf16: bool = True) -> tuple[str, str]:
    """(error, warning), "" for none, before a training builds its model: whether `available` bytes (a GPU's
    free memory, or the machine's RAM that `local_processes` ranks share) can hold it. The error only when
    the floor, float32 weights, gradients and AdamW state, does not fit (the run would be killed at its
    first step, on a CPU by the kernel without a word); the warning when the whole estimate does not."""
    mode = "single" if world_size == 1 and parallelism != "fsdp" else parallelism
    m = memory_per_gpu(cfg, gpus=world_size, parallelism=mode, micro_batch=micro_batch, seq_len=seq_len,
                       activation_checkpointing=activation_checkpointing, grad_accum=grad_accum, compile=compile,
                       bf16=bf16)
    floor, total = (m.weights + m.grads + m.optimizer) * local_processes, m.total * local_processes
    ranks = f" ({local_processes} processes)" if local_processes > 1 else ""
    fixes = ("set parallelism 'fsdp' to shard that state over the ranks (more GPUs), " if mode != "fsdp" else
             "shard over more GPUs, ")
    if floor > available:
        label = "single-process" if mode == "single" else f"{mode.upper()} ({world_size} ranks)"
        return (f"{where} has {available / GIB:.1f} GiB, but {label} training of this {num_params(cfg) / 1e9:.2f}B-"
                f"parameter model needs at least {floor / GIB:.1f} GiB there{ranks} for float32 weights, gradients "
                f"and AdamW state: {fixes}or train a smaller model; `tenali plan` estimates each layout's memory"), ""
    if total > available:
        return "", (f"note: {where} has {available / GIB:.1f} GiB; this run is estimated to need {total / GIB:.1f} GiB"
                    f"{ranks} (activations of micro-batch {micro_batch} x {seq_len}: {m.activations / GIB:.1f} GiB), "
                    "so it may run out of memory: lower batch_size (global_batch_tokens keeps the step's size), "
                    "turn on activation_checkpointing, or " + fixes.rstrip(", "))
    return "", ""


# --- the plan ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    model: str
    cfg: ModelConfig
    gpu: GPU
    gpus: int
    tokens: float
    seq_len: int
    global_batch_tokens: int
    micro_batch: int
    mfu: float
    price_per_gpu_hour: float | None
    memory: list[Memory]

    @property
    def params(self) -> int:
        return num_params(self.cfg)

    @property
    def flops_per_token(self) -> int:
        return flops_per_token(self.cfg, self.seq_len)

    @property
    def trained_tokens(self) -> int:
        """What the run trains: whole steps of global_batch_tokens, at least the tokens asked for (one
        step of 1M tokens when fewer are asked for, whose time the plan must count)."""
        return self.steps * self.global_batch_tokens

    @property
    def total_flops(self) -> float:
        return self.flops_per_token * self.trained_tokens

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / self.global_batch_tokens)

    @property
    def grad_accum(self) -> float:
        """Micro-steps per optimizer step (fractional when the batch does not divide evenly)."""
        return self.global_batch_tokens / (self.micro_batch * self.seq_len * self.gpus)

    @property
    def seconds(self) -> float:
        return self.total_flops / (self.gpus * self.gpu.peak_bf16_flops * self.mfu)

    @property
    def gpu_hours(self) -> float:
        return self.seconds / 3600 * self.gpus

    @property
    def cost(self) -> float | None:
        return None if self.price_per_gpu_hour is None else self.gpu_hours * self.price_per_gpu_hour

    @property
    def auto_parallelism(self) -> str:
        """What the trainer's parallelism "auto" picks for this model."""
        if self.gpus == 1:
            return "single"
        return "fsdp" if self.params >= FSDP_AUTO_MIN_PARAMS else "ddp"


def plan(model: str | ModelConfig, *, tokens: float, gpus: int, gpu: str = "h100", mfu: float = 0.4,
         price_per_gpu_hour: float | None = None, seq_len: int | None = None,
         global_batch_tokens: int | None = None, micro_batch: int = 1,
         vocab_size: int | None = None, compile: bool = False) -> Plan:
    """Time, cost and memory per GPU of training `model` (a preset name or a ModelConfig) on
    `tokens` tokens with `gpus` GPUs of kind `gpu` at the given MFU, with or without the trainer's
    `compile` (TrainConfig's default is without; every GPU recipe compiles).

    global_batch_tokens defaults to about 1M tokens (a multiple of seq_len * gpus * micro_batch).
    """
    cfg = preset(model) if isinstance(model, str) else model
    name = model if isinstance(model, str) else "custom"
    if vocab_size:
        cfg = replace(cfg, vocab_size=vocab_size)
    seq_len = seq_len or cfg.max_seq_len
    if seq_len > cfg.max_seq_len:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}")
    if gpus < 1 or micro_batch < 1 or tokens <= 0:
        raise ValueError("gpus, micro_batch and tokens must be positive")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    per_micro = micro_batch * seq_len * gpus
    if global_batch_tokens is None:
        global_batch_tokens = per_micro * max(1, round(2 ** 20 / per_micro))
    if global_batch_tokens <= 0:
        raise ValueError("global_batch_tokens must be positive")
    accum = global_batch_tokens / per_micro
    memory = [memory_per_gpu(cfg, gpus=gpus, parallelism=par, micro_batch=micro_batch, seq_len=seq_len,
                             activation_checkpointing=ac, grad_accum=accum, compile=compile)
              for par in (("ddp", "fsdp") if gpus > 1 else ("single",)) for ac in (False, True)]
    return Plan(name, cfg, get_gpu(gpu), gpus, float(tokens), seq_len, int(global_batch_tokens), micro_batch, mfu,
                price_per_gpu_hour, memory)


# --- rendering -----------------------------------------------------------------------------------

def _si(x: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.1f} minutes"


def checkpoint_bytes(params: int, trainable: int | None = None) -> int:
    """About what one training checkpoint takes: float32 weights, and AdamW's two float32 moments of the
    `trainable` parameters (all by default: 12 bytes a parameter, the 7B preset's 82.6 GB; LoRA: little more than
    the weights)."""
    return 4 * params + 8 * (params if trainable is None else trainable)


def gather_check(need: float, *, total: float, available: float, where: str) -> tuple[str, str]:
    """(error, warning), "" for none, before a training on GPUs: a consolidated checkpoint (the run's last,
    and every one under checkpoint_format 'full') is gathered into rank 0's host memory, `need` bytes
    (`checkpoint_bytes`: under FSDP the whole model's, not a rank's shard). The error when the host's memory
    in all (`total`, within its container's limit) cannot hold it: the kernel would kill rank 0 at the
    run's last save, after all its GPU-hours, and again after a retry. The warning when what it has
    `available` now cannot."""
    what = (f"a consolidated checkpoint of this model (the run's last save; every save under checkpoint_format "
            f"'full') gathers {need / GIB:.1f} GiB of float32 weights and AdamW state into rank 0's host memory")
    if need > total:
        return (f"{where} has {total / GIB:.1f} GiB of host memory, but {what}: rank 0 would be killed at that save. "
                "Give the node more memory (on Kubernetes TENALI_K8S_MEMORY), or train a smaller model"), ""
    if need > available:
        return "", (f"note: {where} has {available / GIB:.1f} GiB of host memory available now, and {what}: "
                    "that save may run out of memory if nothing else frees some")
    return "", ""


def render(p: Plan) -> str:
    """The plan as a plain-text report with a memory table."""
    cfg, g = p.cfg, p.gpu
    accum = p.grad_accum
    accum_text = f"{accum:g}" if accum == int(accum) else f"{accum:.2f} (not a whole number: adjust)"
    lines = [
        f"model      {p.model}: {_si(p.params)} parameters ({_si(non_embedding_params(cfg))} non-embedding), "
        f"dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads ({cfg.n_kv_heads} KV), "
        f"vocab {cfg.vocab_size:,}",
        f"hardware   {p.gpus} x {g.name} ({g.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16 dense, "
        f"{g.memory_gib:.1f} GiB)",
        f"batch      seq_len {p.seq_len:,}; {p.global_batch_tokens:,} tokens per step "
        f"({p.global_batch_tokens / p.seq_len:g} sequences); micro-batch {p.micro_batch} per GPU, "
        f"grad_accum {accum_text}",
        f"compute    {_si(p.tokens)} tokens = {p.steps:,} steps"
        + (f" ({_si(p.trained_tokens)} tokens trained)" if _si(p.trained_tokens) != _si(p.tokens) else "")
        + f"; {p.flops_per_token:.3g} FLOPs/token "
        f"(6N + 12*L*d*T) = {p.total_flops:.3g} FLOPs",
        f"time       at {p.mfu:.0%} MFU: {_duration(p.seconds)} wall, {p.gpu_hours:,.0f} GPU-hours"
        + (f", ${p.cost:,.0f} at ${p.price_per_gpu_hour:g}/GPU-hour" if p.cost is not None else ""),
        f"parallel   the trainer's \"auto\" picks {p.auto_parallelism} for this model",
        f"checkpoint {checkpoint_bytes(p.params) / GIB:,.1f} GiB each (float32 weights and AdamW's two moments, "
        f"12 bytes a parameter)"
        + (f"; under fsdp every checkpoint but the last is sharded: "
           f"{checkpoint_bytes(p.params) / p.gpus / GIB:,.1f} GiB a rank, all written at once"
           if p.auto_parallelism == "fsdp" else "")
        + "; the last is gathered whole into rank 0's host memory, which must hold it",
        "",
        f"memory per GPU (GiB; {'torch.compile' if any(m.compiled for m in p.memory) else 'eager, no torch.compile'}; "
        f"peak = weights + adam (+ grads under DDP: its buckets) + the most of the forward pass's end "
        f"(transient + activations"
        f"{' + grads: accumulating' if accum > 1 else ''}) and the backward's start and end (grads); "
        f"fits = peak <= {USABLE_FRACTION:.0%} of {g.memory_gib:.1f})",
    ]
    header = ["setup", "weights", "grads", "adam", "transient", "activations", "peak", "fits"]
    rows = []
    for m in p.memory:
        setup = ((f"fsdp x{m.gpus}" if m.parallelism == "fsdp" else m.parallelism)
                 + (" +act.ckpt" if m.activation_checkpointing else "")
                 + (" (blocks compiled)" if m.compiled == "blocks" else ""))
        fits = "yes" if m.total <= USABLE_FRACTION * g.memory_gib * GIB else "no"
        rows.append([setup] + [f"{v / GIB:.1f}" for v in (m.weights, m.grads, m.optimizer,
                                                          m.transient, m.activations, m.total)] + [fits])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines += [fmt(header)] + [fmt(r) for r in rows]
    return "\n".join(lines)
