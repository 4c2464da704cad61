"""Forward throughput of the Flax model zoo against PyTorch, same weights, same machine, same run.

    python benchmarks/bench_models.py             # ResNet-50 at 128 and 224 px, IResNet-50 at 112,
                                                  # ViT-S/16 at 224; batch 32
    python benchmarks/bench_models.py --quick     # smoke test: batch 4, ResNet-50 at 64 px
    python benchmarks/bench_models.py --arch vit_small_patch16_224 --batch 8

Models and their PyTorch yardsticks (random weights, identical on both sides):

- ``resnet50``: torchvision-layout twin (tests/models/hnd_models_torch_refs.py), layer ``layer4.2.conv1``;
- ``iresnet50``: arcface_torch-layout twin (same file), 112 px (fixed by its head), ``layer4.2.conv2``;
- ``vit_small_patch16_224``: timm's own model (tests/models/timm_ref.py), 224 px, ``blocks.11``
  (returned as a 14x14 map).

For each input size it times, on identical random weights (with randomised BatchNorm statistics)
and identical inputs:

- ``flax``: the jit-compiled NNX forward (``jax.jit`` over ``nnx.merge``), whatever device JAX uses;
- ``flax+capture``: the dissection pipeline's :class:`hnd_jax.pipeline.forward.LayerForward`
  returning the model's layer (above) too, fed host images (what a dissection run executes per batch,
  host-to-device copy included). (The eager ``forward_with_layers`` convenience re-splits the
  module on every call: ~10 ms of Python per ResNet-50 call, invisible on a CPU, 6x on an H200.)
- ``torch``: the torchvision-layout PyTorch twin (tests/models/hnd_models_torch_refs.py, since
  torchvision cannot be imported here) in ``inference_mode`` on the CPU, its default threads.
  PyTorch is the yardstick here: it is the framework the checkpoints come from, so "how does
  the port compare with simply running the original" is the baseline question for a model.

Best of ``--reps`` timed runs after one untimed warm-up (the first Flax call, mostly XLA
compilation, is reported separately). Also checked: the Flax output equals the PyTorch output (max error relative
to the largest |output|). Printed: a table; saved: benchmarks/results/models_<config>_<platform>.json
with device kind, CPU count, process peak RSS and, on accelerators, JAX's peak device memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "models"))

import jax  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from hnd_jax.atomic import write_json  # noqa: E402
from hnd_jax.demo.machine import measured_on  # noqa: E402
from hnd_jax.pipeline.forward import LayerForward  # noqa: E402
from hnd_jax.sharding import make_data_mesh  # noqa: E402
from hnd_jax.models.registry import build_model  # noqa: E402
from hnd_jax.models.torch_mapping import load_torch_state_dict  # noqa: E402
from hnd_models_torch_refs import (  # noqa: E402
    numpy_state_dict, randomize_batchnorm, relative_error, torch_iresnet, torch_resnet,
)


def _torch_vit_small():
    from timm_ref import import_timm

    return import_timm().create_model("vit_small_patch16_224", pretrained=False, num_classes=1000)


#: arch -> (PyTorch builder, captured layer, default sizes, quick sizes)
MODELS = {
    "resnet50": (lambda: torch_resnet("resnet50", "fc", 1000), "layer4.2.conv1", [128, 224], [64]),
    "iresnet50": (lambda: torch_iresnet("iresnet50"), "layer4.2.conv2", [112], [112]),
    "vit_small_patch16_224": (_torch_vit_small, "blocks.11", [224], [224]),
}


def best_of(fn, reps: int) -> tuple[float, float]:
    """(warm-up seconds, best timed seconds) of ``fn()``, which must block until its result exists."""
    t = time.perf_counter()
    fn()
    warmup = time.perf_counter() - t
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return warmup, min(times)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def device_peak_mib() -> float | None:
    stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
    return None if not stats else stats.get("peak_bytes_in_use", 0) / 2**20


def bench_size(arch: str, size: int, batch: int, reps: int, seed: int) -> dict:
    make_torch, layer, _, _ = MODELS[arch]
    torch.manual_seed(seed)
    tmodel = make_torch().eval()
    randomize_batchnorm(tmodel, seed)
    state = numpy_state_dict(tmodel)
    model = build_model(arch, num_outputs=int(next(v for k, v in state.items() if k in ("fc.weight", "head.weight")).shape[0]))
    load_torch_state_dict(model, state)
    x = np.random.default_rng(seed).uniform(0, 1, size=(batch, size, size, 3)).astype(np.float32)

    graphdef, state = nnx.split(model)
    plain = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    x_dev = jax.device_put(x)
    t = time.perf_counter()
    flax_out = np.asarray(plain(state, x_dev))  # first call: compiles
    flax_compile = time.perf_counter() - t
    _, flax_s = best_of(lambda: plain(state, x_dev).block_until_ready(), reps)
    pipeline_forward = LayerForward(model, [layer], make_data_mesh())
    cap_warm, cap_s = best_of(lambda: jax.block_until_ready(pipeline_forward(x)), reps)

    x_t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.inference_mode():
        torch_out = tmodel(x_t).numpy()
        torch_warm, torch_s = best_of(lambda: tmodel(x_t), reps)

    return {
        "arch": arch, "layer": layer, "image_size": size, "batch": batch, "reps": reps,
        "flax_images_per_s": batch / flax_s, "flax_first_call_s": flax_compile,
        "flax_capture_images_per_s": batch / cap_s, "flax_capture_warmup_s": cap_warm,
        "torch_images_per_s": batch / torch_s, "torch_warmup_s": torch_warm,
        "flax_over_torch": torch_s / flax_s, "flax_capture_over_torch": torch_s / cap_s,
        "max_rel_error_vs_torch": relative_error(flax_out, torch_out),
        "peak_rss_mib": peak_rss_mib(), "device_peak_mib": device_peak_mib(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 reps, ResNet-50 at 64 px (smoke test)")
    parser.add_argument("--arch", nargs="+", default=list(MODELS), choices=list(MODELS), help="default: all")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="input sizes (default per model: resnet50 128 224, iresnet50 112, vit 224)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 32)")
    parser.add_argument("--reps", type=int, default=None, help="timed runs per case, best kept (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    config = "quick" if args.quick else "full"
    batch = args.batch or (4 if args.quick else 32)
    reps = args.reps or (2 if args.quick else 3)

    device = jax.devices()[0]
    env = {
        "jax_platform": device.platform, "device_kind": device.device_kind, "jax_devices": jax.device_count(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "jax": jax.__version__, "torch": torch.__version__, "load_average": os.getloadavg(),
    }
    rows = []
    for arch in args.arch:
        sizes = args.sizes or (MODELS[arch][3] if args.quick else MODELS[arch][2])
        rows += [bench_size(arch, size, batch, reps, seed=i) for i, size in enumerate(sizes)]

    print(f"forward, batch {batch}, best of {reps}; JAX on {device.platform} ({device.device_kind}), "
          f"PyTorch CPU with {env['torch_threads']} threads; load average {env['load_average'][0]:.1f}")
    header = f"{'model':<22} {'size':>5} {'flax img/s':>11} {'+capture':>9} {'torch img/s':>12} {'flax/torch':>11} " \
             f"{'compile s':>10} {'rel err':>9} {'peak RSS MiB':>13}"
    print(header)
    for r in rows:
        print(f"{r['arch']:<22} {r['image_size']:>5} {r['flax_images_per_s']:>11.1f} {r['flax_capture_images_per_s']:>9.1f} "
              f"{r['torch_images_per_s']:>12.1f} {r['flax_over_torch']:>10.2f}x {r['flax_first_call_s']:>10.1f} "
              f"{r['max_rel_error_vs_torch']:>9.1e} {r['peak_rss_mib']:>13.0f}")
    out = args.out or ROOT / "benchmarks" / "results" / f"models_{config}_{device.platform}.json"
    write_json(out, {"benchmark": "bench_models", "config": config, "env": env, "machine": measured_on(), "rows": rows})
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
