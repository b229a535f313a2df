"""Dataclass configs: building, overrides, YAML, and errors that name the field."""

import dataclasses
from typing import Literal, Optional

import pytest

from reasonjax.config import ConfigError, from_dict, load_yaml, override, save_yaml, to_dict
from reasonjax.models import ModelConfig, get_config
from reasonjax.parallel import MeshConfig


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    schedule: Literal["cosine", "linear"] = "cosine"


@dataclasses.dataclass(frozen=True)
class Run:
    model: ModelConfig = ModelConfig()
    mesh: MeshConfig = MeshConfig()
    optim: Optim = Optim()
    steps: int = 10
    name: Optional[str] = None
    tags: tuple[str, ...] = ()


def test_overrides_nested_and_typed():
    cfg = override(Run(), ["optim.lr=3e-4", "model.n_layers=6", "mesh.fsdp=2",
                           "name=exp1", "tags=[a, b]", "optim.schedule=linear"])
    assert cfg.optim.lr == 3e-4 and cfg.model.n_layers == 6 and cfg.mesh.fsdp == 2
    assert cfg.name == "exp1" and cfg.tags == ("a", "b") and cfg.optim.schedule == "linear"


@pytest.mark.parametrize("item, message", [
    ("optim.lrr=1", r"unknown key 'optim.lrr'; valid keys here: \['lr', 'schedule'\]"),
    ("steps=ten", r"steps: expected an integer, got 'ten'"),
    ("optim.schedule=step", r"optim.schedule: 'step' is not one of \['cosine', 'linear'\]"),
    ("model.n_heads=3", r"n_heads \(3\) must be a multiple of n_kv_heads"),
    ("steps", r"expected key=value"),
])
def test_override_errors_name_the_field(item, message):
    with pytest.raises(ConfigError, match=message):
        override(Run(), [item])


def test_yaml_round_trip_and_unknown_keys(tmp_path):
    cfg = override(Run(), ["model.rope_scaling={type: llama3, factor: 8.0}"])
    save_yaml(cfg, tmp_path / "run.yaml")
    assert load_yaml(Run, tmp_path / "run.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("optim: {lr: 0.1, momentum: 0.9}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim: unknown key\(s\) \['momentum'\]"):
        load_yaml(Run, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(Run, tmp_path / "missing.yaml")


def test_model_config_round_trips_through_dict():
    cfg = get_config("llama-3.1-8b")
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg


def test_a_union_member_is_switched_by_its_whole_section():
    """``algorithm.name=dapo`` alone would keep GRPO's values under DAPO's name; a YAML
    section naming a member with another member's keys gets that member's own error."""
    from reasonjax.rl.algorithms import DAPO, GRPO
    from reasonjax.rl.config import RLConfig

    with pytest.raises(ConfigError, match=r"algorithm.name=dapo: the name picks.*"
                                          r"algorithm=\{name: dapo\}"):
        override(RLConfig(algorithm=GRPO()), ["algorithm.name=dapo"])
    assert override(RLConfig(algorithm=GRPO()), ["algorithm={name: dapo}"]).algorithm == DAPO()
    assert override(RLConfig(algorithm=GRPO()), ["algorithm.name=grpo"]).algorithm == GRPO()
    with pytest.raises(ConfigError, match=r"^algorithm: unknown key\(s\) \['lam'\].*"
                                          r"give the whole section"):
        from_dict(RLConfig, {"algorithm": {"name": "grpo", "lam": 0.9}})
