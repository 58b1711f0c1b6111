"""Our VLA against LeRobot 0.6.1's SmolVLA of the same shape on one GPU, side by side in one run.

Random weights, offline configs (`smolvla_reference`), batches and helpers from `bench_model`. Every number is a
median of timed calls after two warm-up calls (the first, reported as "first call", holds any torch.compile),
with `torch.cuda.synchronize()` around each timed call. TF32 matmuls are on for every row alike
(`allow_tf32 = True`; LeRobot's compile_model sets the same precision itself).

1. Chunk latency (batch 1, the preset's chunk and Euler steps: 50 and 10 for `smolvla`; cameras
   `observation.images.front`, or `cam0..2` for 3, at the preset's image size) in `torch.no_grad()` and eval
   mode: LeRobot float32, LeRobot under bfloat16 autocast, LeRobot with `compile_model` (mode "default": its
   default "max-autotune" would not fit the time budget) under bfloat16 autocast; ours float32, bfloat16, and
   bfloat16 with compile=true (the three share weights).
2. Training samples/s (forward, backward, AdamW; batch 8, 1 camera). LeRobot keeps its defaults
   (freeze_vision_encoder, train_expert_only: the VLM is frozen); ours has freeze_vlm=True and no image
   embedding cache (image_cache_mb=0), so every step recomputes the camera embeddings.
3. Speed-ups of each of our rows against the fastest LeRobot row of the same section and camera count, and
   against LeRobot's default float32 row (>1: ours is faster).

Rows run most important first; before each row, once `--budget-s` seconds have passed since start (or when an
earlier first call of the same policy says this one would pass it) the row is skipped. A row that fails prints
its error's last line and the run goes on. Results go to `--json` after every row.

    python benchmarks/bench_gpu.py [--device cuda] [--preset smolvla] [--budget-s 420] [--repeats 20]
                                   [--json bench_gpu.json]
"""

# ruff: noqa: E402
from __future__ import annotations

import time

START = time.perf_counter()  # the budget counts the imports too

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lerobot
import torch
import transformers
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import CAM, batch, cpu_bf16_support, features, train_step_fn
from smolvla_reference import make_smolvla, save_local_vlm

from vla.model import PRESETS
from vla.policies.configuration_vla import VLAConfig
from vla.policies.modeling_vla import VLAPolicy

THEIRS, THEIRS_BF16 = "LeRobot SmolVLA float32 (default)", "LeRobot SmolVLA bfloat16 autocast"
THEIRS_COMPILED = "LeRobot SmolVLA compiled (compile_model, mode=default) bfloat16 autocast"
OURS_FP32, OURS_BF16, OURS_COMPILED = "ours float32", "ours bfloat16", "ours bfloat16 compile=true"
# row label, policy (built once per section, shared by the rows naming it), run it under bfloat16 autocast
LATENCY_ROWS = [(THEIRS, "theirs", False), (OURS_BF16, "ours bfloat16", False), (THEIRS_BF16, "theirs", True),
                (OURS_FP32, "ours float32", False), (OURS_COMPILED, "ours compiled", False),
                (THEIRS_COMPILED, "theirs compiled", True)]
TRAIN_ROWS = [(THEIRS, "theirs", False), (THEIRS_BF16, "theirs", True), (OURS_FP32, "ours float32", False),
              (OURS_BF16, "ours bfloat16", False), (OURS_COMPILED, "ours compiled", False)]
TRAIN_BATCH = 8
FREEZE_FIELDS = ("freeze_vision_encoder", "train_expert_only", "train_state_proj")


class Bench:
    def __init__(self, args: argparse.Namespace, vlm_dir: Path, meta: dict[str, Any]) -> None:
        self.args, self.vlm_dir, self.meta = args, vlm_dir, meta
        self.cfg = PRESETS[args.preset]
        self.dev = args.device
        self.policies: dict[str, Any] = {}
        self.first_call: dict[str, float] = {}  # "section:policy" -> seconds of its first (compiling) call
        self.results: list[dict[str, Any]] = []
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - START

    def sync(self) -> None:
        if self.dev.startswith("cuda"):
            torch.cuda.synchronize()

    def autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(device_type=torch.device(self.dev).type, dtype=torch.bfloat16)

    def free(self) -> None:
        self.policies.clear()
        torch._dynamo.reset()
        gc.collect()
        if self.dev.startswith("cuda"):
            torch.cuda.empty_cache()

    def policy(self, key: str, cameras: tuple[str, ...]) -> Any:
        if key not in self.policies:
            self.policies[key] = self.build(key, cameras)
        return self.policies[key]

    def build(self, key: str, cameras: tuple[str, ...]) -> Any:
        cfg = self.cfg
        inputs, outputs = features(cfg.vision.image_size, cameras)
        torch.manual_seed(0)
        if key.startswith("theirs"):
            compiled = {"compile_model": True, "compile_mode": "default"} if key == "theirs compiled" else {}
            return make_smolvla(cfg, self.vlm_dir, inputs, outputs, device=self.dev, **compiled)
        config = VLAConfig(preset=self.args.preset, dtype="float32" if key == "ours float32" else "bfloat16",
                           compile=key == "ours compiled", freeze_vlm=True, image_cache_mb=0,
                           chunk_size=cfg.chunk_size, n_action_steps=cfg.chunk_size, num_steps=cfg.num_steps,
                           device=self.dev, push_to_hub=False)
        config.input_features, config.output_features = dict(inputs), dict(outputs)
        policy = VLAPolicy(config).to(self.dev)
        if key != "ours float32":  # every variant runs the float32 row's weights
            policy.load_state_dict(self.policy("ours float32", cameras).state_dict())
        return policy

    def measure(self, fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
        """(median seconds per call, seconds of the first call)."""
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        first = time.perf_counter() - start
        fn()  # second warm-up: allocator, cuBLAS heuristics, a recompile on the second call
        times = []
        for _ in range(repeats):
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), first

    def row(self, section: str, label: str, key: str, n_cams: int, make: Callable[[], Callable[[], Any]],
            repeats: int) -> None:  # fmt: skip
        name, elapsed = f"{section}, {n_cams} camera(s): {label}", self.elapsed()
        if any(text in name for text in self.args.skip):
            print(f"[{elapsed:4.0f} s] SKIPPED {name} (--skip)", flush=True)
            self.skipped.append(f"{name} (--skip)")
            return
        # an earlier first call of this policy (its compile) predicts this one's; training falls back on latency's
        cost = self.first_call.get(f"{section}:{key}", self.first_call.get(f"latency:{key}", 0.0))
        if elapsed > self.args.budget_s or elapsed + cost > self.args.budget_s:
            why = "budget spent" if elapsed > self.args.budget_s else f"its first call took {cost:.0f} s before"
            print(f"[{elapsed:4.0f} s] SKIPPED {name} ({why}; budget {self.args.budget_s:.0f} s)", flush=True)
            self.skipped.append(f"{name} ({why})")
            return self.dump()
        print(f"[{elapsed:4.0f} s] {name} ...", flush=True)
        result: dict[str, Any] = {"section": section, "impl": label, "cameras": n_cams,
                                  "ours": label.startswith("ours")}
        try:
            median, first = self.measure(make(), repeats)
        except Exception as e:
            result["error"] = "".join(traceback.format_exception_only(e)).strip()[:2000]
            print(f"  FAILED {name}: {result['error'].splitlines()[0]}", flush=True)
            gc.collect()
            if self.dev.startswith("cuda"):
                torch.cuda.empty_cache()
        else:
            self.first_call[f"{section}:{key}"] = first
            result["first_call_s"] = first
            if section == "latency":
                result["ms_per_chunk"] = median * 1e3
            else:
                result["samples_per_s"] = TRAIN_BATCH / median
            value = result["ms_per_chunk" if section == "latency" else "samples_per_s"]
            print(f"  {value:.2f} {'ms/chunk' if section == 'latency' else 'samples/s'} (first call {first:.1f} s)",
                  flush=True)
        self.results.append(result)
        self.dump()

    def latency(self, n_cams: int) -> None:
        cfg, cams = self.cfg, (CAM,) if n_cams == 1 else tuple(f"observation.images.cam{i}" for i in range(n_cams))
        data = batch(cfg.vision.image_size, 1, cfg.chunk_size, 200, cams, self.dev)

        def make(key: str, amp: bool) -> Callable[[], Callable[[], Any]]:
            def infer_fn() -> Callable[[], Any]:
                policy = self.policy(key, cams).eval()
                dim = policy.model.cfg.max_action_dim if isinstance(policy, VLAPolicy) else policy.config.max_action_dim
                g = torch.Generator().manual_seed(1)
                noise = torch.randn(1, cfg.chunk_size, dim, generator=g).to(self.dev)

                def infer() -> Any:
                    with torch.no_grad(), self.autocast() if amp else nullcontext():
                        return policy.predict_action_chunk(dict(data), noise=noise)
                return infer
            return infer_fn

        for label, key, amp in LATENCY_ROWS:
            self.row("latency", label, key, n_cams, make(key, amp), self.args.repeats)
        self.free()

    def training(self) -> None:
        cfg = self.cfg
        data = batch(cfg.vision.image_size, TRAIN_BATCH, cfg.chunk_size, 200, (CAM,), self.dev)

        def make(key: str, amp: bool) -> Callable[[], Callable[[], Any]]:
            return lambda: train_step_fn(self.policy(key, (CAM,)), data, self.autocast if amp else nullcontext)

        for label, key, amp in TRAIN_ROWS:
            self.row("training", label, key, 1, make(key, amp), max(2, self.args.repeats // 2))
        self.free()

    def with_ratios(self) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.results]
        for r in rows:
            metric = "ms_per_chunk" if r["section"] == "latency" else "samples_per_s"
            if not r["ours"] or metric not in r:
                continue
            theirs = [t for t in rows if not t["ours"] and metric in t
                      and (t["section"], t["cameras"]) == (r["section"], r["cameras"])]
            if not theirs:
                continue
            sign = 1 if metric == "samples_per_s" else -1  # ours / theirs, or theirs / ours for a time
            best = max(theirs, key=lambda t: sign * t[metric])
            r["lerobot_best"], r["speedup_vs_lerobot_best"] = best["impl"], (r[metric] / best[metric]) ** sign
            for t in theirs:
                if t["impl"] == THEIRS:
                    r["speedup_vs_lerobot_default"] = (r[metric] / t[metric]) ** sign
        return rows

    def dump(self) -> None:
        if self.args.json:
            out = {"meta": self.meta | {"elapsed_s": self.elapsed()}, "rows": self.with_ratios(),
                   "skipped": self.skipped}
            Path(self.args.json).write_text(json.dumps(out, indent=1))

    def print_table(self) -> None:
        print("\n| section | cameras | implementation | ms / chunk or samples/s | first call (s) | "
              "speed-up vs LeRobot best | vs LeRobot default | note |")
        print("|---|---|---|---|---|---|---|---|")
        for r in self.with_ratios():
            value = (f"{r['ms_per_chunk']:.1f} ms" if "ms_per_chunk" in r
                     else f"{r['samples_per_s']:.1f} samples/s" if "samples_per_s" in r else "-")
            first = f"{r['first_call_s']:.1f}" if "first_call_s" in r else "-"
            best = f"{r['speedup_vs_lerobot_best']:.2f}x" if "speedup_vs_lerobot_best" in r else "-"
            default = f"{r['speedup_vs_lerobot_default']:.2f}x" if "speedup_vs_lerobot_default" in r else "-"
            note = f"best LeRobot: {r['lerobot_best']}" if "lerobot_best" in r else ""
            if "error" in r:
                note = f"FAILED: {r['error'].splitlines()[0][:200]}"
            print(f"| {r['section']} | {r['cameras']} | {r['impl']} | {value} | {first} | {best} | {default} "
                  f"| {note} |")
        for s in self.skipped:
            print(f"skipped: {s}")
        print(*(f"note: {n}" for n in self.meta["notes"]), sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="smolvla", choices=sorted(PRESETS))
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip the remaining rows after this long")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls for latency (training: half, >= 2)")
    parser.add_argument("--skip", nargs="*", default=[], help="skip rows whose name contains any of these texts")
    parser.add_argument("--json", default="bench_gpu.json", help="results, rewritten after every row ('' = none)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = PRESETS[args.preset]
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "none"
    defaults = {f.name: f.default for f in dataclasses.fields(SmolVLAConfig) if f.name in FREEZE_FIELDS}
    meta = {
        "device": args.device, "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
        "lerobot": lerobot.__version__, "cpu": cpu_bf16_support(), "cpu_threads": torch.get_num_threads(),
        "preset": args.preset, "image_size": cfg.vision.image_size, "chunk_size": cfg.chunk_size,
        "num_steps": cfg.num_steps, "train_batch": TRAIN_BATCH, "repeats": args.repeats,
        "budget_s": args.budget_s, "lerobot_freeze_defaults": defaults,
        "notes": ["TF32 matmuls on for all rows (torch.backends.cuda.matmul.allow_tf32 = True)",
                  "LeRobot compiled row: compile_mode='default'; its default 'max-autotune' would blow the ~8 min "
                  "time budget with autotuning",
                  f"LeRobot SmolVLA training keeps its defaults {defaults} (VLM frozen, trains the action expert)",
                  "ours: freeze_vlm=True, image_cache_mb=0 (training recomputes camera embeddings every step); "
                  "'ours bfloat16' autocasts itself and stores the frozen VLM in bfloat16",
                  "speed-up: LeRobot ms / ours ms for latency, ours samples/s / LeRobot samples/s for training"]}
    print(f"GPU {gpu}; device {args.device}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"lerobot {lerobot.__version__}; {torch.get_num_threads()} CPU threads, {meta['cpu']}", flush=True)
    print(f"preset {args.preset}: image {cfg.vision.image_size}, chunk {cfg.chunk_size}, {cfg.num_steps} steps; "
          f"budget {args.budget_s:.0f} s; LeRobot freeze defaults {defaults}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args, save_local_vlm(cfg, Path(tmp) / args.preset), meta)
        bench.latency(1)
        bench.latency(3)
        bench.training()
    bench.print_table()
    print(f"total {bench.elapsed():.0f} s", flush=True)


if __name__ == "__main__":
    main()
