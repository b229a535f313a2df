"""``reasonjax replicate <recipe> [--preset tiny|paper] [key=value ...]``.

Every recipe is a module ``reasonjax.recipes.<name>`` with a ``Config`` dataclass and
``run(config, run_dir) -> Result``. Presets are YAML files
``reasonjax/configs/<name>-<preset>.yaml``; ``key=value`` overrides apply on top (dotted
keys, YAML values: ``task.difficulty=hard``, ``warmup.steps=200``). The run directory
(default ``runs/<name>-<preset>``) receives the resolved config, metrics, phase results,
``report.md`` and plots; rerunning with the same directory resumes from the last
completed phase.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

from reasonjax.config import ConfigError, load_yaml
from reasonjax.recipes.rundir import Result

RECIPES = ("alphamath", "mcts_dpo", "step_dpo", "prm", "scaling", "coverage")
PRESETS = ("tiny", "paper")


def recipe_module(name: str):
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return importlib.import_module(f"reasonjax.recipes.{name}")


def preset_path(name: str, preset: str) -> Path:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("reasonjax") / "configs" / f"{name}-{preset}.yaml"))


def load_config(name: str, preset: str = "tiny", overrides: Sequence[str] = ()) -> Any:
    """The recipe's Config from its preset YAML plus ``key=value`` overrides."""
    return load_yaml(recipe_module(name).Config, preset_path(name, preset), overrides)


def replicate(name: str, preset: str = "tiny", overrides: Sequence[str] = (),
              run_dir: Optional[str | Path] = None) -> Result:
    """Runs recipe ``name`` (see the module docstring) and returns its Result."""
    cfg = load_config(name, preset, overrides)
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / f"{name}-{preset}"
    return recipe_module(name).run(cfg, run_dir)
