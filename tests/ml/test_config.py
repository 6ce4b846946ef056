"""config.py: unknown keys get one message with the closest valid key and timm's names mapped."""

import pytest

from maskcls_hpo.config import ConfigError, TrainConfig, config_from_mapping, load_config


def test_timm_args_yaml_keys_are_named_with_their_equivalents(tmp_path):
    """A timm `args.yaml` (opt, sched, drop, img_size) is refused in one line that maps each key."""
    path = tmp_path / "args.yaml"
    path.write_text("model: test_resnet\nopt: sgd\nsched: cosine\ndrop: 0.2\nimg_size: 64\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message == (
        f"{path}: invalid training config: unknown keys 'opt' (timm's name for 'optimizer'), 'sched' (timm's name "
        "for 'scheduler'), 'drop' (timm's name for 'dropout'), 'img_size' (timm's name for 'image_size') "
        "(the valid keys: `maskcls-hpo train --print-config`)"
    )
    assert "\n" not in message
    assert message.count("batch_size") == 0  # the list of valid keys is not repeated


def test_a_typo_gets_the_closest_key():
    with pytest.raises(ConfigError, match=r"unknown key 'lerning_rate' \(no such key\)"):
        config_from_mapping({"lerning_rate": 0.1})
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"batchsize": 16, "schedular": "step", "epochs": 0})
    message = str(info.value)
    assert "unknown keys 'batchsize' (did you mean 'batch_size'?), 'schedular' (did you mean 'scheduler'?)" in message
    assert "key 'epochs': Input should be greater than or equal to 1 (got 0)" in message


def test_timm_keys_without_an_equivalent_say_what_to_use():
    with pytest.raises(ConfigError, match=r"'num_classes' \(timm's num_classes: fixed at 18 classes here"):
        config_from_mapping({"num_classes": 18})


def test_every_mapped_timm_key_names_a_real_key():
    from maskcls_hpo.config import TIMM_KEYS

    assert set(TIMM_KEYS.values()) <= set(TrainConfig.model_fields)
