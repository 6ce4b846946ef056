"""Backbone + heads, dropout, model names, preprocessing, and pretrained weights without the network."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

from maskcls_hpo import models
from maskcls_hpo.config import ConfigError, TrainConfig
from maskcls_hpo.models import (
    PretrainedWeightsError,
    build_model,
    canonical_model_name,
    check_pretrained_available,
    resolve_preprocessing,
)


@pytest.fixture()
def empty_weight_caches(tmp_path, monkeypatch):
    """An empty Hugging Face cache and torch hub dir, so the machine's own caches never matter."""
    from huggingface_hub import constants

    hf = tmp_path / "hf"
    hf.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torchhub"))
    yield hf, tmp_path / "torchhub"
    torch.hub.set_dir(old)


def test_single_head_gives_18_logits_and_multi_head_three_tasks():
    x = torch.randn(2, 3, 32, 24)
    single = build_model(TrainConfig(model="test_efficientnet", head="single")).eval()
    assert single(x).shape == (2, 18)
    multi = build_model(TrainConfig(model="test_resnet", head="multi")).eval()
    out = multi(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"mask": (2, 3), "gender": (2, 2), "age": (2, 3)}


def test_head_has_dropout_before_each_linear_layer():
    model = build_model(TrainConfig(head="multi", dropout=0.3))
    for head in model.heads.values():
        assert isinstance(head[0], torch.nn.Dropout) and head[0].p == 0.3
        assert isinstance(head[1], torch.nn.Linear) and head[1].in_features == model.backbone.num_features


def test_dropout_changes_outputs_in_train_mode_not_in_eval_mode():
    torch.manual_seed(0)
    model = build_model(TrainConfig(dropout=0.5))
    x = torch.randn(4, 3, 32, 24)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))
    # the control: with p = 0 train mode is deterministic (BatchNorm uses the same batch statistics twice)
    no_dropout = build_model(TrainConfig(dropout=0.0)).train()
    with torch.no_grad():
        torch.testing.assert_close(no_dropout(x), no_dropout(x))


def test_xception_is_mapped_to_legacy_xception_with_one_warning(monkeypatch):
    monkeypatch.setattr(models, "_warned_names", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [canonical_model_name("xception") for _ in range(3)]
    assert names == ["legacy_xception"] * 3
    relevant = [w for w in caught if "xception" in str(w.message)]
    assert len(relevant) == 1
    assert "legacy_xception" in str(relevant[0].message)
    assert canonical_model_name("efficientnet_b0") == "efficientnet_b0"


def test_preprocessing_comes_from_the_model_unless_overridden():
    model = build_model(TrainConfig(model="test_resnet"))
    size, mean, std = resolve_preprocessing(TrainConfig(model="test_resnet", image_size=None), model)
    assert size == (160, 160)  # timm's pretrained cfg of test_resnet
    assert mean == pytest.approx((0.5, 0.5, 0.5)) and std == pytest.approx((0.5, 0.5, 0.5))
    eff = build_model(TrainConfig(model="test_efficientnet"))
    _, mean, std = resolve_preprocessing(TrainConfig(image_size=None), eff)
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    cfg = TrainConfig(image_size=(48, 36), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert resolve_preprocessing(cfg, eff) == ((48, 36), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_unknown_model_name_is_a_config_error_with_suggestions():
    with pytest.raises(ConfigError, match="efficientnet_b9.*did you mean.*efficientnet_b"):
        build_model(TrainConfig(model="efficientnet_b9"))


def test_pretrained_without_cached_weights_names_model_and_the_ways_to_provide_them(empty_weight_caches):
    with pytest.warns(FutureWarning):
        models._warned_names.discard("xception")
        cfg = TrainConfig(model="xception", pretrained=True)
        with pytest.raises(PretrainedWeightsError) as info:
            check_pretrained_available(cfg)
    message = str(info.value)
    assert "legacy_xception" in message
    assert "pretrained: /path/to/weights" in message
    assert "local-dir:" in message
    assert "Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message
    assert "pretrained: false" in message
    with pytest.raises(PretrainedWeightsError, match="test_efficientnet"):
        build_model(TrainConfig(model="test_efficientnet", pretrained=True))


def test_pretrained_false_needs_nothing(empty_weight_caches):
    assert check_pretrained_available(TrainConfig(pretrained=False)).kind == "none"


def fill_hf_cache(hf_cache, repo_id: str, files: dict[str, bytes]) -> None:
    """Lay files out as huggingface_hub's cache does: models--org--name/{refs/main, snapshots/<sha>/...}."""
    commit = "0" * 40
    repo = hf_cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_pretrained_true_loads_from_a_prefilled_hugging_face_cache(empty_weight_caches, tmp_path):
    hf_cache, _ = empty_weight_caches
    torch.manual_seed(123)
    reference = timm.create_model("test_efficientnet", pretrained=False)  # with its 1000-class classifier
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    fill_hf_cache(hf_cache, "timm/test_efficientnet.r160_in1k", {"model.safetensors": weights.read_bytes()})

    cfg = TrainConfig(model="test_efficientnet", pretrained=True)
    source = check_pretrained_available(cfg)
    assert source.kind == "hf-cache" and source.path.name == "model.safetensors"
    model = build_model(cfg)
    torch.testing.assert_close(model.backbone.conv_stem.weight, reference.conv_stem.weight)
    torch.testing.assert_close(model.backbone.blocks[0][0].bn1.running_mean, reference.blocks[0][0].bn1.running_mean)


def test_pretrained_true_finds_torch_hub_checkpoint_of_url_weights(empty_weight_caches):
    _, hub = empty_weight_caches
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "xception-43020ad28.pth").write_bytes(b"")  # legacy_xception's url file name
    source = check_pretrained_available(TrainConfig(model="legacy_xception", pretrained=True))
    assert source.kind == "torch-cache" and source.path.name == "xception-43020ad28.pth"


def test_pretrained_weights_file_is_loaded_into_the_backbone(tmp_path):
    torch.manual_seed(5)
    reference = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    path = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_model(TrainConfig(model="test_resnet", pretrained=str(path)))
    torch.testing.assert_close(model.backbone.conv1[0].weight, reference.conv1[0].weight)


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    other = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    path = tmp_path / "resnet.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match=r"only \d+ of \d+ tensors of model 'test_efficientnet' match"):
        build_model(TrainConfig(model="test_efficientnet", pretrained=str(path)))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        check_pretrained_available(TrainConfig(pretrained=str(tmp_path / "missing.pth")))


def test_local_dir_source_loads_config_and_weights_from_a_folder(tmp_path, empty_weight_caches):
    from timm.models._hub import save_for_hf

    torch.manual_seed(9)
    reference = timm.create_model("test_resnet", pretrained=False)
    save_for_hf(reference, str(tmp_path / "folder"), safe_serialization=True)
    cfg = TrainConfig(model=f"local-dir:{tmp_path / 'folder'}", pretrained=True)
    assert check_pretrained_available(cfg).kind == "local-dir"
    model = build_model(cfg)
    torch.testing.assert_close(model.backbone.conv1[0].weight, reference.conv1[0].weight)
    with pytest.raises(PretrainedWeightsError, match="config.json"):
        check_pretrained_available(TrainConfig(model=f"local-dir:{tmp_path / 'nothing'}", pretrained=True))
