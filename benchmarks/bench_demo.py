"""What the demos cost on a 2-core CPU, and what each training recipe buys.

Issue 14 sizes `make demo` for a 2-core AMD EPYC with AVX2 and no AVX-512, where one
ResNet18 training step of the old demo (28 px, batch 256) takes ~1.9 s (TARGET_R18_STEP).
This machine may differ, so every time here is also scaled to that machine: a backbone's
step there is estimated as 1.9 s times its step / ResNet18's step measured side by side
here, once natively and once with AVX2 emulated (ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2, in a subprocess), and the larger (slower) of the two estimates is
used. Every timing also prints how busy the other processes kept the CPU meanwhile.

Sections (steps, data, compile and recipes by default; demo and parallel with --only):

  steps    training-step time (forward, backward, SGD) of each backbone candidate at the
           demo's input (28 px gray, batch 256) and the Tiny-ImageNet study's (64 px RGB,
           batch 256), contiguous and channels_last, native and AVX2-emulated;
  data     one epoch of input: the per-image DataLoader vs decoded once + batched augmentation;
  compile  torch.compile's compile time and its step time against eager;
  recipes  trains recipe candidates (the MRL model of a study) and prints top-1 per size
           against training minutes here and estimated on the target machine;
  demo     runs a study end to end into data/bench/ (its own checkpoints, caches, figures)
           and prints its phases (train / cache / notebooks), here and scaled;
  parallel the demo's five all-class models trained one after the other (all threads) and
           two at a time (cores // 2 threads each), and the demo's notebooks (--quick: four)
           run with jobs=1 and 2 (needs the demo's caches: `make demo` first); prints both
           ratios.

    flock /tmp/mrl-heavy.lock .venv/bin/python benchmarks/bench_demo.py [--only steps data]
        [--quick] [--study demo|tiny-imagenet] [--recipes NAME ...] [--avx2]

``--avx2`` runs everything with AVX2 emulated in every library that dispatches on the CPU
(AVX2_FULL_ENV: torch, oneDNN, faiss, numpy, OpenBLAS, MKL): the closest this machine gets
to the target's instruction set; the target was still ~2.4x slower than that on ResNet18's
step (1.9 s against ~0.79 s emulated on a 2-core AVX-512 EPYC), so emulated times bound the
target's from below and 2.4x them from above.

Results are also written to data/bench/bench_demo-<section>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrl_analysis.app.studies import load_study  # noqa: E402
from mrl_analysis.models.loss import MatryoshkaCELoss  # noqa: E402
from mrl_analysis.models.network import build_model  # noqa: E402

#: Issue 14: one ResNet18 training step of the old demo on the target machine (seconds).
TARGET_R18_STEP = 1.9
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
AVX2_FULL_ENV = {
    **AVX2_ENV,
    "FAISS_OPT_LEVEL": "avx2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL",
    "OPENBLAS_CORETYPE": "Haswell",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
OUT = ROOT / "data" / "bench"
TINY_ROOT = ROOT.parent / "shared" / "data" / "tiny-imagenet-200"

BACKBONES = [
    "resnet18",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "mobilenet_v3_small",
    "mnasnet0_5",
    "mobilenet_v2",
    "regnet_x_400mf",
    "efficientnet_b0",
]
QUICK_BACKBONES = ["resnet18", "shufflenet_v2_x0_5", "mobilenet_v3_small", "mnasnet0_5"]
#: (name, image size, channels, classes): the two studies' inputs.
INPUTS = [("demo 28px gray", 28, 1, 10), ("tiny 64px rgb", 64, 3, 200)]

#: Recipe candidates: a study and TrainConfig fields for its MRL model (all classes).
RECIPES: dict[str, dict[str, Any]] = {
    # Fashion-MNIST (the demo): the old recipe, then cheaper backbones and schedules.
    "fm-r18-e2": {"study": "demo", "arch": "resnet18", "epochs": 2},
    "fm-r18-e1-20k": {"study": "demo", "arch": "resnet18", "epochs": 1, "max_train_samples": 20000},
    "fm-shuf05-e1": {
        "study": "demo",
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "epochs": 1,
    },
    "fm-shuf05-e1-32k": {
        "study": "demo",
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "epochs": 1,
        "max_train_samples": 32000,
    },
    "fm-shuf05-e2-16k": {
        "study": "demo",
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "epochs": 2,
        "max_train_samples": 16000,
    },
    "fm-shuf05-e2-20k": {
        "study": "demo",
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "epochs": 2,
        "max_train_samples": 20000,
    },
    "fm-shuf05-e2-24k": {
        "study": "demo",
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "epochs": 2,
        "max_train_samples": 24000,
    },
    "fm-shuf05-e2": {
        "study": "demo",
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "epochs": 2,
    },
    "fm-shuf05-e3": {
        "study": "demo",
        "arch": "shufflenet_v2_x0_5",
        "channels_last": True,
        "epochs": 3,
    },
    "fm-mnv3s-e2": {
        "study": "demo",
        "arch": "mobilenet_v3_small",
        "channels_last": True,
        "epochs": 2,
    },
    "fm-mnas05-e2": {"study": "demo", "arch": "mnasnet0_5", "channels_last": True, "epochs": 2},
    # Tiny-ImageNet: the old recipe, then more epochs of cheaper backbones.
    "tin-r18-e1": {"study": "tiny-imagenet", "arch": "resnet18", "epochs": 1, "batch_size": 128},
    "tin-r18-e4": {"study": "tiny-imagenet", "arch": "resnet18", "epochs": 4, "batch_size": 128},
    "tin-mnv3s-e4": {
        "study": "tiny-imagenet",
        "arch": "mobilenet_v3_small",
        "channels_last": True,
        "epochs": 4,
        "batch_size": 128,
    },
    **{
        f"tin-shuf05-e{epochs}": {
            "study": "tiny-imagenet",
            "arch": "shufflenet_v2_x0_5",
            "channels_last": True,
            "epochs": epochs,
            "batch_size": 128,
        }
        for epochs in (2, 4, 8)
    },
}


# --------------------------------------------------------------------------- measuring


def _cpu_jiffies() -> tuple[float, float]:
    """(busy seconds of all CPUs, CPU seconds of this process and its finished children)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # minus idle, iowait
    own = os.times()
    # Children count as ours: the steps section measures in subprocesses.
    mine = own.user + own.system + own.children_user + own.children_system
    return busy / os.sysconf("SC_CLK_TCK"), mine


@contextlib.contextmanager
def watched() -> Iterator[dict[str, float]]:
    """Time a block; ``result["others"]``: the share of the machine's cores other processes
    kept busy meanwhile (0 = quiet, 1 = every core taken)."""
    result: dict[str, float] = {}
    busy0, own0 = _cpu_jiffies()
    t0 = time.perf_counter()
    yield result
    wall = time.perf_counter() - t0
    busy1, own1 = _cpu_jiffies()
    others = (busy1 - busy0) - (own1 - own0)
    result["seconds"] = wall
    result["others"] = max(0.0, others / max(wall * (os.cpu_count() or 1), 1e-9))


def machine() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    avx512 = "avx512f" in flags
    return (
        f"{model}, {os.cpu_count()} cores, {'AVX-512' if avx512 else 'no AVX-512'}, "
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"{torch.get_num_threads()} threads"
    )


def save(section: str, payload: Any) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"bench_demo-{section}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"  -> {path.relative_to(ROOT)}")


# --------------------------------------------------------------------------- steps


def _step_worker(spec: dict) -> list[dict]:
    """Runs in a subprocess (its ISA set by the environment): per-step times of each
    (backbone, input, memory format), measured in interleaved rounds."""
    torch.manual_seed(0)
    runs = []
    for arch in spec["backbones"]:
        for label, size, channels, classes in INPUTS:
            for cl in (False, True):
                model = build_model(arch, classes, "mrl", None, in_channels=channels)
                if cl:
                    model = model.to(memory_format=torch.channels_last)
                runs.append(
                    {
                        "backbone": arch,
                        "input": label,
                        "channels_last": cl,
                        "dim": model.feature_dim,
                        "model": model,
                        "opt": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                        "x": torch.randn(spec["batch"], channels, size, size).contiguous(
                            memory_format=torch.channels_last if cl else torch.contiguous_format
                        ),
                        "y": torch.randint(0, classes, (spec["batch"],)),
                        "times": [],
                        "forward": [],
                        "others": [],
                    }
                )
    loss_fn = MatryoshkaCELoss()

    def step(run: dict) -> None:
        loss = loss_fn(run["model"](run["x"]), run["y"])
        run["opt"].zero_grad(set_to_none=True)
        loss.backward()
        run["opt"].step()

    for run in runs:  # warm-up: oneDNN picks and caches its kernels
        step(run)
        step(run)

    def forward(run: dict) -> None:
        run["model"].eval()
        with torch.inference_mode():
            run["model"](run["x"])
        run["model"].train()

    for _ in range(spec["rounds"]):
        for run in runs:
            for _ in range(spec["steps"]):
                with watched() as w:
                    step(run)
                run["times"].append(w["seconds"])
                run["others"].append(w["others"])
            with watched() as w:  # what caching pays per batch: inference only
                forward(run)
            run["forward"].append(w["seconds"])
    return [
        {
            "backbone": r["backbone"],
            "input": r["input"],
            "channels_last": r["channels_last"],
            "dim": r["dim"],
            "min_s": min(r["times"]),
            "median_s": statistics.median(r["times"]),
            "forward_s": min(r["forward"]),
            "others": statistics.mean(r["others"]),
        }
        for r in runs
    ]


def _spawn_steps(spec: dict, env: dict[str, str]) -> list[dict]:
    cmd = [sys.executable, __file__, "--step-worker", json.dumps(spec)]
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_steps(args: argparse.Namespace) -> dict:
    spec = {
        "backbones": QUICK_BACKBONES if args.quick else BACKBONES,
        "batch": 256,
        "rounds": 2 if args.quick else 3,
        "steps": 2,
    }
    results = {}
    for isa, env in (("native", {}), ("avx2", AVX2_ENV)):
        print(f"  measuring {len(spec['backbones'])} backbones ({isa}) ...", flush=True)
        results[isa] = _spawn_steps(spec, env)
    rows = []
    for native, avx2 in zip(results["native"], results["avx2"], strict=True):
        ref = {
            isa: next(
                r
                for r in results[isa]
                if r["backbone"] == "resnet18"
                and r["input"] == native["input"]
                and not r["channels_last"]
            )
            for isa in results
        }
        ratio_native = native["min_s"] / ref["native"]["min_s"]
        ratio_avx2 = avx2["min_s"] / ref["avx2"]["min_s"]
        rows.append(
            {
                **{k: native[k] for k in ("backbone", "input", "channels_last", "dim")},
                "native_s": native["min_s"],
                "avx2_s": avx2["min_s"],
                "forward_native_s": native["forward_s"],
                "forward_avx2_s": avx2["forward_s"],
                "ratio_native": ratio_native,
                "ratio_avx2": ratio_avx2,
                # ResNet18's 28 px step there is 1.9 s; at 64 px it costs what it costs here
                # relative to its 28 px step (same ISA).
                "target_s": TARGET_R18_STEP
                * max(
                    ratio_native * _r18_scale(results, "native", native["input"]),
                    ratio_avx2 * _r18_scale(results, "avx2", native["input"]),
                ),
                "others": max(native["others"], avx2["others"]),
            }
        )
    print(
        f"\n  {'backbone':<20} {'input':<15} {'layout':<7} {'dim':>5} {'native':>8} "
        f"{'avx2':>8} {'÷r18 nat':>9} {'÷r18 avx2':>9} {'target≈':>8} {'fwd nat':>8} "
        f"{'fwd avx2':>8} {'others':>6}"
    )
    for r in sorted(rows, key=lambda r: (r["input"], r["target_s"])):
        print(
            f"  {r['backbone']:<20} {r['input']:<15} {'NHWC' if r['channels_last'] else 'NCHW':<7} "
            f"{r['dim']:>5} {r['native_s']:>7.3f}s {r['avx2_s']:>7.3f}s {r['ratio_native']:>9.2f} "
            f"{r['ratio_avx2']:>9.2f} {r['target_s']:>7.2f}s {r['forward_native_s']:>7.3f}s "
            f"{r['forward_avx2_s']:>7.3f}s {100 * r['others']:>5.0f}%"
        )
    print(
        "  target≈: estimated step on the 2-core AVX2 EPYC = 1.9 s × (this step ÷ ResNet18's "
        "28 px step, same ISA), the slower of the native and the AVX2-emulated estimate; "
        "fwd: one inference batch of 256 (what caching pays)"
    )
    return {"rows": rows, "spec": spec}


def _r18_scale(results: dict, isa: str, label: str) -> float:
    """ResNet18's step at ``label``'s input ÷ its step at the demo's 28 px input (one ISA)."""

    def step(inp: str) -> float:
        return next(
            r["min_s"]
            for r in results[isa]
            if r["backbone"] == "resnet18" and r["input"] == inp and not r["channels_last"]
        )

    return step(label) / step(INPUTS[0][0])


# --------------------------------------------------------------------------- data


def section_data(args: argparse.Namespace) -> dict:
    from torch.utils.data import DataLoader

    from mrl_analysis.data.decoded import (
        BatchTransform,
        decode_images,
        forget_decoded,
        iterate_batches,
    )
    from mrl_analysis.data.registry import get_dataset

    rows = []
    cases = [("fashion-mnist train", "fashion-mnist", None)]
    if TINY_ROOT.exists():
        cases.append(("tiny-imagenet train", "tiny-imagenet", TINY_ROOT))
    for label, name, root in cases:
        bundle = get_dataset(name, "train", root=root, augment=True)
        n = len(bundle.dataset) if not args.quick else min(len(bundle.dataset), 10000)
        subset = torch.utils.data.Subset(bundle.dataset, range(n))
        with watched() as per_image:
            for _ in DataLoader(subset, batch_size=256, shuffle=True):
                pass
        forget_decoded()
        with watched() as decode:
            decoded = decode_images(subset)
        batched = BatchTransform.from_transform(bundle.transform, decoded.images.shape[1:])
        g = torch.Generator().manual_seed(0)
        with watched() as epoch:
            for _ in iterate_batches(decoded, torch.randperm(n), 256, batched, g):
                pass
        forget_decoded()
        row = {
            "data": label,
            "images": n,
            "per_image_epoch_s": per_image["seconds"],
            "decode_once_s": decode["seconds"],
            "batched_epoch_s": epoch["seconds"],
            "others": max(per_image["others"], decode["others"], epoch["others"]),
        }
        rows.append(row)
        print(
            f"  {label:<22} {n:>6} images: per-image loader {row['per_image_epoch_s']:6.1f} s/epoch"
            f" | decode once {row['decode_once_s']:5.1f} s + batched {row['batched_epoch_s']:5.1f}"
            f" s/epoch  (others {100 * row['others']:.0f}%)"
        )
    return {"rows": rows}


# --------------------------------------------------------------------------- compile


def section_compile(args: argparse.Namespace) -> dict:
    arch = args.compile_arch
    model = build_model(arch, 10, "mrl", None, in_channels=1).to(memory_format=torch.channels_last)
    x = torch.randn(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (256,))
    loss_fn = MatryoshkaCELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def timed(forward: Callable, n: int) -> list[float]:
        times = []
        for _ in range(n):
            with watched() as w:
                loss = loss_fn(forward(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            times.append(w["seconds"])
        return times

    eager = timed(model, 6)[2:]
    compiled = torch.compile(model)
    with watched() as first:
        timed(compiled, 1)
    steady = timed(compiled, 6)[2:]
    row = {
        "backbone": arch,
        "eager_step_s": min(eager),
        "compiled_step_s": min(steady),
        "compile_s": first["seconds"],
        "others": first["others"],
    }
    saved = row["eager_step_s"] - row["compiled_step_s"]
    print(
        f"  {arch} 28 px NHWC: eager {row['eager_step_s']:.3f} s/step, compiled "
        f"{row['compiled_step_s']:.3f} s/step, first compiled step {row['compile_s']:.1f} s "
        f"-> pays off after {row['compile_s'] / saved if saved > 0 else float('inf'):.0f} steps"
    )
    return row


# --------------------------------------------------------------------------- recipes


def _target_factor(arch: str, channels_last: bool, input_label: str) -> float | None:
    """Target seconds per second here for ``arch``, from the steps section's results."""
    path = OUT / "bench_demo-steps.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["result"]["rows"]
    for r in rows:
        if (
            r["backbone"] == arch
            and r["channels_last"] == channels_last
            and r["input"] == input_label
        ):
            return r["target_s"] / r["native_s"]
    return None


def section_recipes(args: argparse.Namespace) -> dict:
    from mrl_analysis.models.checkpoints import load_checkpoint
    from mrl_analysis.models.training import train

    names = args.recipes or [n for n in RECIPES if RECIPES[n]["study"] == args.study]
    rows = []
    for name in names:
        recipe = dict(RECIPES[name])
        study = load_study(recipe.pop("study"))
        configs = study.train_configs()
        base = dataclasses.asdict(configs["mrl"])
        cfg = {**base, **recipe}
        if study.name == "tiny-imagenet":
            cfg["data_root"] = str(TINY_ROOT)
        out = OUT / "recipes" / f"{name}.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        with watched() as w:
            train(cfg, out, resume=True, progress=not args.quiet)
        meta = load_checkpoint(out)["meta"]
        seconds = sum(h["seconds"] for h in meta["history"])
        top1 = {int(m): a for m, a in meta["history"][-1]["val_top1"].items()}
        label = INPUTS[0][0] if study.name == "demo" else INPUTS[1][0]
        factor = _target_factor(cfg["arch"], cfg.get("channels_last", False), label)
        row = {
            "recipe": name,
            "study": study.name,
            "arch": cfg["arch"],
            "epochs": cfg["epochs"],
            "train_samples": cfg.get("max_train_samples"),
            "train_s_here": seconds,
            "train_s_target": None if factor is None else seconds * factor,
            "top1": top1,
            "others": w["others"],
        }
        rows.append(row)
        sizes = sorted(top1)
        shown = [m for m in sizes if m in (sizes[0], 2, 8, 64, sizes[-1])]
        target = "?" if factor is None else f"{row['train_s_target'] / 60:.1f}"
        print(
            f"  {name:<16} {cfg['arch']:<20} ep {cfg['epochs']}: {seconds / 60:5.1f} min here, "
            f"~{target} min target | top-1 "
            + " ".join(f"{m}:{100 * top1[m]:.1f}" for m in shown)
            + f" (others {100 * w['others']:.0f}%)",
            flush=True,
        )
    return {"rows": rows}


# --------------------------------------------------------------------------- demo


def section_demo(args: argparse.Namespace) -> dict:
    from mrl_analysis.app.demo import run_study
    from mrl_analysis.app.studies.profiles import with_own_parameters

    study = load_study(args.study)
    where = OUT / f"demo-{study.name}"
    if args.fresh and where.exists():
        shutil.rmtree(where)
    models = dataclasses.replace(study.models, checkpoints=where / "checkpoints" / "all")
    novel = study.novel_models
    if novel is not None:
        novel = dataclasses.replace(novel, checkpoints=where / "checkpoints" / "subset")
    batch = {**study.batch, "runs_dir": str(where / "runs"), "figures_dir": str(where / "figures")}
    spec = with_own_parameters(
        dataclasses.replace(
            study, models=models, novel_models=novel, cache_root=where / "cache", batch=batch
        )
    )
    data_root = TINY_ROOT if study.name == "tiny-imagenet" else None
    with watched() as w:
        status = run_study(spec, data_root=data_root)
    arch = study.training.get("arch", "resnet18")
    label = INPUTS[0][0] if study.name == "demo" else INPUTS[1][0]
    factor = _target_factor(arch, bool(study.training.get("channels_last", False)), label)
    row = {
        "study": study.name,
        "status": status,
        "total_s": w["seconds"],
        "others": w["others"],
        "target_factor": factor,
    }
    print(
        f"  {study.name}: {w['seconds'] / 60:.1f} min here (status {status}; others "
        f"{100 * w['others']:.0f}%); the phase times are printed above by the demo itself; "
        f"train/cache scale to the target machine by ×{factor or float('nan'):.2f} "
        f"({arch}, from the steps section)"
    )
    return row


def section_parallel(args: argparse.Namespace) -> dict:
    from mrl_analysis.app.runner import run_batch
    from mrl_analysis.core import parallel
    from mrl_analysis.models.training import train_many

    study = load_study("demo")
    configs = study.train_configs()
    where = OUT / "parallel"
    shutil.rmtree(where, ignore_errors=True)
    times = {}
    for label, jobs in (("one after the other", 1), ("side by side", 2)):
        with watched() as w:
            train_many(configs, where / f"jobs-{jobs}", jobs=jobs, progress=False)
        times[f"train_jobs{jobs}_s"] = w["seconds"]
        print(f"  train {', '.join(configs)} {label}: {w['seconds']:.1f} s", flush=True)
    result = {**times, "cores": parallel.cores()}
    result["train_ratio"] = times["train_jobs1_s"] / times["train_jobs2_s"]
    print(f"  training: side by side {result['train_ratio']:.2f}x sooner", flush=True)

    sets = [study.models] + ([study.novel_models] if study.novel_models else [])
    missing = [p.name for m in sets for p in m.paths().values() if not p.is_file()]
    if missing:
        print(f"  notebooks: skipped, the demo's models {missing} are missing (make demo)")
        return result
    batch = study.batch_spec()
    only = None
    if args.quick:
        only = ["per_dimension_accuracy", "superclass_trends", "oracle_routing", "findings"]
    for jobs in (1, 2):
        with watched() as w:
            summary = run_batch(
                batch,
                only=only,
                runs_dir=where / f"runs-{jobs}",
                figures_dir=where / f"figures-{jobs}",
                progress=False,
                force=True,
                jobs=jobs,
            )
        result[f"notebooks_jobs{jobs}_s"] = w["seconds"]
        ok = int((summary["status"] == "ok").sum())
        print(f"  notebooks, jobs={jobs}: {w['seconds']:.1f} s ({ok}/{len(summary)} ok)")
    result["notebooks_ratio"] = result["notebooks_jobs1_s"] / result["notebooks_jobs2_s"]
    print(f"  notebooks: 2 at a time {result['notebooks_ratio']:.2f}x sooner", flush=True)
    return result


SECTIONS = {
    "steps": section_steps,
    "data": section_data,
    "compile": section_compile,
    "recipes": section_recipes,
    "demo": section_demo,
    "parallel": section_parallel,
}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--step-worker":
        print(json.dumps(_step_worker(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="sections to run")
    parser.add_argument("--quick", action="store_true", help="fewer backbones and samples")
    parser.add_argument("--study", default="demo", choices=["demo", "tiny-imagenet"])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), help="recipes to train")
    parser.add_argument("--compile-arch", default="shufflenet_v2_x0_5")
    parser.add_argument("--fresh", action="store_true", help="demo: start from nothing")
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")
    parser.add_argument("--avx2", action="store_true", help="emulate AVX2 in every library")
    args = parser.parse_args()
    if args.avx2 and any(os.environ.get(k) != v for k, v in AVX2_FULL_ENV.items()):
        # The libraries read these once, as they load: start afresh with them set.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_FULL_ENV})
    print(f"machine: {machine()}")
    with contextlib.suppress(OSError):
        print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    for name in args.only or ["steps", "data", "compile", "recipes"]:
        print(f"== {name}", flush=True)
        with watched() as w:
            result = SECTIONS[name](args)
        print(f"  ({name}: {w['seconds']:.0f} s, others kept {100 * w['others']:.0f}% of the CPU)")
        save(name, {"machine": machine(), "result": result, "seconds": w["seconds"]})


if __name__ == "__main__":
    main()
