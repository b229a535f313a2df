"""``reasonjax replicate <recipe> [--preset tiny|paper] [--seeds 0,1,2] [key=value ...]``
and ``reasonjax report RUN_DIR...``.

Every recipe is a module ``reasonjax.recipes.<name>`` with a ``Config`` dataclass and
``run(config, run_dir) -> Result``. Presets are YAML files
``reasonjax/configs/<name>-<preset>.yaml``; ``key=value`` overrides apply on top (dotted
keys, YAML values: ``task.difficulty=hard``, ``warmup.steps=200``). The run directory
(default ``runs/<name>-<preset>``) receives the resolved config, metrics, phase results,
``report.md`` and plots; rerunning with the same directory resumes from the last
completed phase.

With ``seeds`` the recipe runs once per seed (``seed=<s>`` on top of the overrides),
sequentially, each in its own resumable sub-run ``<run_dir>/seed-<s>``; the run directory's
``report.md`` then pools them: per-seed figures, pooled figures with 95% intervals
(bootstrap over seeds and problems) and every effect's verdict. ``run.json`` records the
recipe, preset, seeds, each seed's wall time and the machine, so :func:`report` can
regenerate every table from the run directories alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import time
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence


from reasonjax.config import ConfigError, from_dict, load_yaml, read_yaml, to_dict
from reasonjax.errors import RunDirError
from reasonjax.fileio import atomic_write_text, read_json
from reasonjax.recipes.rundir import Result, Run, completed_phases, load_outcomes

RUN_FILE = "run.json"

RECIPES = ("alphamath", "mcts_dpo", "step_dpo", "prm", "scaling", "coverage", "reft",
           "countdown_rl", "lora", "dualformer", "pav", "rl_incorrect",
           "revisions")
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


def machine() -> str:
    """The machine a run ran on, in words (CPU count, processor, JAX backend)."""
    import jax

    return (f"{os.cpu_count()} CPU cores ({platform.machine()}), JAX {jax.__version__} on "
            f"{jax.default_backend()}")


def _run_seed(name: str, preset: str, cfg, run_dir: Path) -> Result:
    """One run of the recipe; run.json gets its wall time the first time it finishes
    (a resumed run records the time of the call that finished it, and says so)."""
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_FILE
    info = read_json(info_path, RunDirError) if info_path.is_file() else {}
    resumed = bool(completed_phases(Run(run_dir, cfg)))
    start = time.time()
    result = recipe_module(name).run(cfg, run_dir)
    if "seconds" not in info:
        info = {"recipe": name, "preset": preset, "seeds": [cfg.seed],
                "seconds": round(time.time() - start, 1), "resumed": resumed,
                "machine": machine()}
        atomic_write_text(info_path, json.dumps(info, indent=1))
    return result


def replicate(name: str, preset: str = "tiny", overrides: Sequence[str] = (),
              run_dir: Optional[str | Path] = None,
              seeds: Optional[Sequence[int]] = None) -> Result:
    """Runs recipe ``name`` (see the module docstring) and returns its Result; with
    ``seeds``, once per seed, and the Result pools them."""
    cfg = load_config(name, preset, overrides)
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / f"{name}-{preset}"
    if seeds is None:
        return _run_seed(name, preset, cfg, run_dir)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"--seeds {list(seeds)}: give distinct seeds, e.g. 0,1,2")
    for s in seeds:
        _run_seed(name, preset, dataclasses.replace(cfg, seed=s), run_dir / f"seed-{s}")
    atomic_write_text(run_dir / RUN_FILE, json.dumps(
        {"recipe": name, "preset": preset, "seeds": list(seeds),
         "runs": [f"seed-{s}" for s in seeds]}, indent=1))
    return report(run_dir)


@dataclasses.dataclass
class Replication:
    """A run directory read back: the recipe, preset, per-seed run directories and their
    run.json records."""

    path: Path
    recipe: str
    preset: str
    runs: list
    infos: list


def read_run(run_dir: str | Path) -> Replication:
    """The replication in ``run_dir`` (one seed, or several under ``seed-<s>``)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a finished "
                                "`reasonjax replicate` run directory")
    info = read_json(path, RunDirError)
    runs = [run_dir / r for r in info.get("runs", ["."])]
    infos = [read_json(r / RUN_FILE, RunDirError) if (r / RUN_FILE).is_file() else {}
             for r in runs]
    return Replication(run_dir, info["recipe"], info["preset"], runs, infos)


def report(run_dir: str | Path) -> Result:
    """Regenerates the report of ``run_dir`` from its runs' outcomes (pooled over seeds)."""
    rep = read_run(run_dir)
    module = recipe_module(rep.recipe)
    cfg = from_dict(module.Config, read_yaml(rep.runs[0] / "config.yaml"))
    return module.report(rep.path, cfg, [load_outcomes(r) for r in rep.runs])


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def preset_differences(rep: Replication) -> list[str]:
    """``key=value`` of every setting where the run's config differs from its preset
    today (the seed aside): the overrides it ran with, or a preset changed since."""
    ran = _flat(read_yaml(rep.runs[0] / "config.yaml"))
    preset = _flat(to_dict(load_config(rep.recipe, rep.preset)))
    return [f"{k}={json.dumps(v)}" for k, v in ran.items()
            if k != "seed" and preset.get(k, v) != v]


def readme_row(run_dir: str | Path) -> dict:
    """The README Replications row of a run directory: recipe (with the settings that
    differ from its preset), the paper's claim, the measured figures, every effect's
    verdict with its interval, seeds and time per seed."""
    rep = read_run(run_dir)
    differs = preset_differences(rep)
    result = report(run_dir)
    seconds = [i["seconds"] for i in rep.infos if "seconds" in i]
    checks = "; ".join(f"{e.claim}: **{e.verdict}**, {e.value}" for e in result.effects)
    from reasonjax.eval.stats import tally

    recipe = f"`{rep.recipe}`" + "".join(f" `{d}`" for d in differs)
    return {"recipe": recipe, "paper's claim": recipe_module(rep.recipe).CLAIM,
            "measured (pooled, 95% intervals)": result.headline,
            "effect checks": f"{tally(result.effects)}: {checks}",
            "seeds": len(rep.runs),
            "minutes per seed": (f"{min(seconds) / 60:.1f}-{max(seconds) / 60:.1f}"
                                 if seconds else "?")}
