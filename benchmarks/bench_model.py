"""`make bench`: our VLA against LeRobot 0.6.1's SmolVLA with the same backbone shape, in one run.

For each preset (`small`, `smolvla` by default): inference latency per action chunk (batch 1, one camera at the
backbone's resolution, chunk 50, 10 Euler steps) and training samples/s (forward, backward, AdamW step), as
medians, with the ratio ours/theirs and the achieved GFLOP/s (FLOPs from torch's flop counter for one chunk or
one training step of each implementation). Random weights, offline configs, float32 unless a row says bfloat16 or
int8; those rows also report how far their actions are from float32's. In training, int8 (`--policy.dtype=int8`)
runs the frozen VLM's matmuls in int8 and trains the expert in float32. The `compiled` row is float32 with
`--policy.compile=true`; its compiles happen in the warm-up (the inference one is reported separately). LeRobot's
SmolVLA runs twice: at its defaults (eager) and with its best CPU setting, `compile_model=true` (compile mode
"default"); each of our rows gets a ratio against both.

Training rows recompute every camera embedding, as in a first epoch, except the `frames cached` rows: the same
policy with its image embedding cache on (`--policy.image_cache_mb`, on by default with a frozen VLM), timed once
the cache holds the batch's frames, i.e. every later epoch of a dataset whose frames fit in the cache.

`--malloc keep` (the default here) makes glibc's malloc keep freed memory (`vla.allocator`, the opt-in
`--policy.keep_freed_memory`). That setting is process-wide, so it is applied before anything is built and every
row runs under it, LeRobot's included; `--malloc default` measures every row under glibc's defaults instead.

    python benchmarks/bench_model.py [--presets small smolvla] [--repeats 5] [--malloc keep|default]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from lerobot.configs import FeatureType, PolicyFeature
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from smolvla_reference import make_smolvla, save_local_vlm

from vla.allocator import keep_freed_memory
from vla.model import PRESETS
from vla.model.image_cache import ImageEmbeddingCache
from vla.policies.configuration_vla import VLAConfig
from vla.policies.modeling_vla import VLAPolicy

THEIRS, THEIRS_COMPILED = "LeRobot SmolVLA", "LeRobot SmolVLA compiled"
CAM, STATE_DIM, ACTION_DIM, TOKENS = "observation.images.front", 6, 6, 16
TRAIN_BATCH = {"small": 32, "smolvla": 8, "tiny": 32}
COMPILED, INT8_COMPILED = "ours float32 compiled", "ours int8 compiled"
VARIANTS = [("ours float32", "float32", False), ("ours bfloat16", "bfloat16", False), (COMPILED, "float32", True),
            ("ours int8", "int8", False), (INT8_COMPILED, "int8", True)]  # label, --policy.dtype, --policy.compile
CACHED_EAGER, CACHED_COMPILED = "ours float32, frames cached", f"{COMPILED}, frames cached"
CACHED = {CACHED_EAGER: "ours float32", CACHED_COMPILED: COMPILED}  # training-only rows -> the policy they use
KEEP_FREED = [True]  # --malloc


def features(size: int, cameras: Sequence[str] = (CAM,)) -> tuple[dict[str, PolicyFeature], dict[str, PolicyFeature]]:
    return ({**{cam: PolicyFeature(type=FeatureType.VISUAL, shape=(3, size, size)) for cam in cameras},
             "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))},
            {"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))})


def batch(size: int, b: int, chunk: int, vocab: int, cameras: Sequence[str] = (CAM,),
          device: str = "cpu") -> dict[str, torch.Tensor]:  # fmt: skip
    g = torch.Generator().manual_seed(0)
    data = {
        **{cam: torch.rand(b, 3, size, size, generator=g) for cam in cameras},
        "observation.state": torch.randn(b, STATE_DIM, generator=g),
        "observation.language.tokens": torch.randint(3, vocab, (b, TOKENS), generator=g),
        "observation.language.attention_mask": torch.ones(b, TOKENS, dtype=torch.bool),
        "action": torch.randn(b, chunk, ACTION_DIM, generator=g),
        "action_is_pad": torch.zeros(b, chunk, dtype=torch.bool),
    }
    return {key: value.to(device) for key, value in data.items()}


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin so machine noise hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def flops(fn: Callable[[], Any]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def train_step_fn(policy: Any, data: dict[str, torch.Tensor],
                  autocast: Callable[[], AbstractContextManager[Any]] = nullcontext) -> Callable[[], None]:
    """One AdamW training step of `policy` on `data`, its forward under `autocast()` (default: none)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    policy.train()

    def step() -> None:
        with autocast():
            loss, _ = policy.forward(data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def with_image_cache(policy: Any, step: Callable[[], None]) -> Callable[[], None]:
    """`step` with the policy's image embedding cache on; the warm-up step fills it."""
    cache = ImageEmbeddingCache(2048 << 20)

    def cached() -> None:
        policy.model.image_cache = cache
        try:
            step()
        finally:
            policy.model.image_cache = None

    return cached


def bench_preset(name: str, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    cfg = PRESETS[name]
    size = cfg.vision.image_size
    inputs, outputs = features(size)
    infer_batch = batch(size, 1, cfg.chunk_size, 200)
    train_batch = batch(size, TRAIN_BATCH[name], cfg.chunk_size, 200)
    noise = torch.randn(1, cfg.chunk_size, cfg.max_action_dim)

    torch.manual_seed(0)
    vlm_dir = save_local_vlm(cfg, tmp / name)
    theirs = make_smolvla(cfg, vlm_dir, inputs, outputs).eval()
    # LeRobot's best CPU setting: its compile_model flag (mode "default"; its "max-autotune" default autotunes
    # for GPUs), same weights
    theirs_compiled = make_smolvla(cfg, vlm_dir, inputs, outputs, compile_model=True, compile_mode="default").eval()
    theirs_compiled.load_state_dict(theirs.state_dict())
    policies: dict[str, Any] = {THEIRS: theirs, THEIRS_COMPILED: theirs_compiled}
    for label, dtype, compile_ in VARIANTS:
        ours = VLAConfig(preset=name, dtype=dtype, freeze_vlm=True, chunk_size=cfg.chunk_size,
                         n_action_steps=cfg.chunk_size, compile=compile_, keep_freed_memory=KEEP_FREED[0],
                         image_cache_mb=0,
                         num_steps=cfg.num_steps, device="cpu", push_to_hub=False)
        ours.input_features, ours.output_features = dict(inputs), dict(outputs)
        torch.manual_seed(0)
        policies[label] = VLAPolicy(ours).eval()
    # every variant runs the same weights as the float32 row
    for label, _, _ in VARIANTS[1:]:
        policies[label].load_state_dict(policies["ours float32"].state_dict())

    def infer_fn(policy: Any) -> Callable[[], torch.Tensor]:
        def infer() -> torch.Tensor:
            with torch.no_grad():
                return policy.predict_action_chunk(infer_batch, noise=noise)
        return infer

    infers = {label: infer_fn(p) for label, p in policies.items()}
    compile_s = {}
    for label in (COMPILED, INT8_COMPILED, THEIRS_COMPILED):
        start = time.perf_counter()
        infers[label]()
        compile_s[label] = time.perf_counter() - start
    infer_s = interleaved_medians(infers, repeats)
    actions = {label: fn() for label, fn in infers.items()}
    # the compiled and int8 rows do the same arithmetic as float32 (the counter sees neither into compiled graphs
    # nor int8 matmuls), so their GFLOP/s are float32's operations per second
    infer_flops = {label: flops(fn) for label, fn in infers.items() if label not in compile_s and "int8" not in label}
    for label in (COMPILED, "ours int8", INT8_COMPILED):
        infer_flops[label] = infer_flops["ours float32"]
    infer_flops[THEIRS_COMPILED] = infer_flops[THEIRS]
    steps = {label: train_step_fn(p, train_batch) for label, p in policies.items()}
    for label, base in CACHED.items():
        steps[label] = with_image_cache(policies[base], train_step_fn(policies[base], train_batch))
    for label in CACHED:
        steps[label]()  # fills the cache: the flop count below is then a warm step's
    train_flops = {label: flops(fn) for label, fn in steps.items() if "compiled" not in label and "int8" not in label}
    for label in (COMPILED, "ours int8", INT8_COMPILED):
        train_flops[label] = train_flops["ours float32"]
    train_flops[THEIRS_COMPILED] = train_flops[THEIRS]
    train_flops[CACHED_COMPILED] = train_flops[CACHED_EAGER]
    train_s = interleaved_medians(steps, max(2, repeats // 2))
    reference = actions["ours float32"]
    rows = []
    for label in [*policies, *CACHED]:
        policy = policies[CACHED.get(label, label)]
        policy.eval()
        row = {"preset": name, "impl": label, "params_m": sum(p.numel() for p in policy.parameters()) / 1e6}
        if label in infer_s:
            row |= {"infer_ms": infer_s[label] * 1e3, "infer_gflops": infer_flops[label] / infer_s[label] / 1e9,
                    "chunk_gflop": infer_flops[label] / 1e9, "actions": actions[label]}
        if label in train_s:
            row |= {"train_sps": TRAIN_BATCH[name] / train_s[label],
                    "train_gflops": train_flops[label] / train_s[label] / 1e9}
        rows.append(row)
    for row in rows:
        if row["impl"] in CACHED:
            row["note"] = "training only: camera embeddings from the image cache, as in every epoch after the first"
            continue
        diff = float((row["actions"] - reference).abs().max() / reference.abs().max())
        if row["impl"] == "ours bfloat16":
            row["note"] = f"max |bf16 - fp32| / max |fp32| = {diff:.3f}"
        elif row["impl"] == THEIRS_COMPILED:
            ref = actions[THEIRS]
            diff = float((row["actions"] - ref).abs().max() / ref.abs().max())
            row["note"] = (f"compile {compile_s[THEIRS_COMPILED]:.0f} s; "
                           f"max |compiled - eager| / max |eager| = {diff:.1e}")
        elif row["impl"] == COMPILED:
            row["note"] = f"compile {compile_s[COMPILED]:.0f} s; max |compiled - eager| / max |eager| = {diff:.1e}"
        elif "int8" in row["impl"]:
            compiled = f"compile {compile_s[INT8_COMPILED]:.0f} s; " if row["impl"] == INT8_COMPILED else ""
            row["note"] = f"{compiled}max |int8 - fp32| / max |fp32| = {diff:.3f}"
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Speed-ups against LeRobot's default (eager) row and against its best row (the faster of eager and
    compiled), each for the same preset."""
    theirs = [r for r in rows if r["impl"] in (THEIRS, THEIRS_COMPILED)]
    base = {r["preset"]: r for r in theirs if r["impl"] == THEIRS}
    best_ms = {p: min(r["infer_ms"] for r in theirs if r["preset"] == p) for p in base}
    best_sps = {p: max(r["train_sps"] for r in theirs if r["preset"] == p) for p in base}
    print("\n| preset | implementation | params (M) | ms / chunk | GFLOP / chunk | GFLOP/s | vs default | vs best | "
          "train samples/s | GFLOP/s | vs default | vs best | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, b = r["preset"], base[r["preset"]]
        train = (f"{r['train_sps']:.2f} | {r['train_gflops']:.0f} | {r['train_sps'] / b['train_sps']:.2f}x | "
                 f"{r['train_sps'] / best_sps[p]:.2f}x" if "train_sps" in r else "- | - | - | -")
        infer = (f"{r['infer_ms']:.1f} | {r['chunk_gflop']:.2f} | {r['infer_gflops']:.0f} | "
                 f"{b['infer_ms'] / r['infer_ms']:.2f}x | {best_ms[p] / r['infer_ms']:.2f}x" if "infer_ms" in r
                 else "- | - | - | - | -")
        print(f"| {p} | {r['impl']} | {r['params_m']:.1f} | {infer} | {train} | {r.get('note', '')} |")


def cpu_bf16_support() -> str:
    """The CPU's model and whether it has AMX (fast bfloat16 matmuls) or only AVX-512 BF16: bfloat16 rows depend
    on it, and so does float32 (MKL's float32 kernels run far slower on AMD than on Intel CPUs)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU flags unknown"
    flags = set(info.split())
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    if "amx_bf16" in flags:
        return f"{model}, has AMX (bfloat16 matmuls fast)"
    return f"{model}, " + ("AVX-512 BF16 but no AMX" if "avx512_bf16" in flags else "no bfloat16 instructions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "smolvla"], choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="keep: glibc keeps freed memory for every row (what our policy sets); default: glibc's")
    args = parser.parse_args()
    KEEP_FREED[0] = args.malloc == "keep"
    malloc = "glibc defaults"
    if KEEP_FREED[0]:
        malloc = "malloc keeps freed memory (all rows)" if keep_freed_memory() else "malloc tuning unavailable"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, {cpu_bf16_support()}, {malloc}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            print(f"benchmarking preset {name} ...", flush=True)
            rows += bench_preset(name, args.repeats, Path(tmp))
            print_table(rows)


if __name__ == "__main__":
    main()
