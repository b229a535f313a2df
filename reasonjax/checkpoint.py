"""Checkpoints: orbax model directories, train-state managers, and HF conversion.

A reasonjax model directory holds::

    model_config.json    the ModelConfig
    params/              orbax (tensorstore) params, restorable onto any mesh
    <tokenizer files>    copied from the source checkpoint when there is one

Train-state checkpoints go through :func:`make_manager` (orbax ``CheckpointManager``:
async saves, keep-last-N, atomic step directories) and hold the state pytree plus a JSON
entry for the data iterator, so a resumed run continues on the same data.

Everything is written to a temporary path and renamed at the end: a crash never leaves a
half-written checkpoint that looks complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from reasonjax.config import ConfigError, from_dict, to_dict
from reasonjax.errors import CheckpointError, first_line, warn
from reasonjax.fileio import atomic_dir, read_json, refuse_existing
from reasonjax.models import hf
from reasonjax.models.config import ModelConfig

MODEL_CONFIG = "model_config.json"


def abstract_tree(tree, shardings=None):
    """ShapeDtypeStructs for ``tree`` (with ``shardings`` when given) to restore into."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=getattr(x, "sharding", None)),
                            tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def save_params(path: str | Path, params) -> Path:
    """Writes params with orbax to ``path`` (a new directory)."""
    path = Path(path).absolute()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, params)
    ckptr.wait_until_finished()
    return path


def _saved_tree(path: Path):
    """The pytree of ArrayMetadata (shape, dtype) of an orbax params directory."""
    try:
        meta = ocp.StandardCheckpointer().metadata(path).item_metadata
    except Exception as e:
        raise CheckpointError(f"{path}: orbax metadata cannot be read ({first_line(e, 160)}); "
                              "the checkpoint is truncated or corrupt") from None
    return getattr(meta, "tree", meta)


def _named_leaves(tree) -> dict[str, Any]:
    return {jax.tree_util.keystr(k, simple=True, separator="/"): v
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def check_shapes(saved, expected, where: str, fix: str) -> None:
    """Raises CheckpointError naming the first tensor whose saved shape differs from the
    expected one (or that only one side has); ``saved``/``expected``: pytrees of objects
    with ``.shape``."""
    a, b = _named_leaves(saved), _named_leaves(expected)
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            if name not in a:
                raise CheckpointError(f"{where}: the checkpoint lacks tensor {name} (it is "
                                      f"truncated or corrupt, or of another model); {fix}")
            raise CheckpointError(f"{where}: the model has no tensor {name}; {fix}")
        if tuple(a[name].shape) != tuple(b[name].shape):
            raise CheckpointError(f"{where}: tensor {name} is saved with shape "
                                  f"{tuple(a[name].shape)} but the model needs "
                                  f"{tuple(b[name].shape)}; {fix}")


def check_finite(params, where: str) -> None:
    """Raises CheckpointError naming the first float tensor holding NaN / Inf."""
    import jax.numpy as jnp

    for name, x in _named_leaves(params).items():
        if jnp.issubdtype(x.dtype, jnp.floating) and not bool(jnp.isfinite(x).all()):
            raise CheckpointError(f"{where}: tensor {name} holds NaN/Inf values; a model with "
                                  "non-finite weights is refused (use an intact checkpoint)")


def restore_params(path: str | Path, target=None):
    """Reads params written by :func:`save_params`.

    target: a pytree of arrays or ShapeDtypeStructs with shardings (e.g. from
    ``abstract_tree(params, parallel.param_shardings(cfg, mesh))``); the params are placed
    onto those shardings, which may come from a different mesh than the one saved from.
    Without a target the arrays are restored onto the default device.
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise hf.CheckpointError(f"orbax params directory {path} does not exist")
    ckptr = ocp.StandardCheckpointer()
    if target is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              _saved_tree(path))
    try:
        return ckptr.restore(path, target)
    except Exception as e:
        raise CheckpointError(f"{path}: the params cannot be restored ({first_line(e, 160)}); "
                              "the checkpoint is truncated or corrupt") from None


def save_model(path: str | Path, config: ModelConfig, params,
               tokenizer_dir: Optional[str | Path] = None, overwrite: bool = False) -> Path:
    """Writes a reasonjax model directory (config + orbax params + tokenizer files); an
    existing ``path`` is refused unless ``overwrite``."""
    with atomic_dir(path, overwrite=overwrite) as tmp:
        save_params(tmp / "params", params)
        if jax.process_index() == 0:
            (tmp / MODEL_CONFIG).write_text(json.dumps(to_dict(config), indent=2))
            if tokenizer_dir is not None:
                hf.copy_tokenizer_files(tokenizer_dir, tmp)
    return Path(path).absolute()


def read_model_config(path: str | Path) -> ModelConfig:
    f = Path(path) / MODEL_CONFIG
    if not f.is_file():
        raise CheckpointError(f"{path} has no {MODEL_CONFIG}; not a reasonjax model "
                              "directory (see `reasonjax convert`)")
    try:
        return from_dict(ModelConfig, read_json(f, CheckpointError))
    except ConfigError as e:
        raise CheckpointError(f"{f}: {e}") from None


def load_model(path: str | Path, shardings=None) -> tuple[ModelConfig, Any]:
    """Reads a reasonjax model directory; ``shardings`` places params on a mesh. Params
    whose shapes do not match model_config.json, unreadable params and non-finite
    weights raise :class:`CheckpointError` naming the directory and tensor."""
    from reasonjax.models import transformer

    config = read_model_config(path)
    params_dir = Path(path).absolute() / "params"
    saved = _saved_tree(params_dir)
    expected = jax.eval_shape(lambda: transformer.init_params(config, jax.random.key(0)))
    check_shapes(saved, expected, str(params_dir),
                 f"{MODEL_CONFIG} does not describe these params (rewrite the directory "
                 "with `reasonjax convert`)")
    target = None
    if shardings is not None:
        target = jax.tree.map(lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s),
                              saved, shardings)
    params = restore_params(params_dir, target)
    check_finite(params, str(params_dir))
    return config, params


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / MODEL_CONFIG).is_file()


def load_checkpoint(path: str | Path, mesh=None, rules=None, **hf_kwargs):
    """Loads a HF directory or a reasonjax model directory. Returns (config, params).

    With ``mesh`` the params are placed directly on their shardings.
    """
    from reasonjax import parallel

    path = Path(path)
    if is_model_dir(path):
        config = read_model_config(path)
    else:
        config = hf.config_from_hf(hf.read_hf_config(path), path,
                                   dtype=hf_kwargs.get("dtype"),
                                   param_dtype=hf_kwargs.get("param_dtype"))
    shardings = None
    if mesh is not None:
        parallel.validate_model_mesh(config, mesh, rules)
        shardings = parallel.param_shardings(config, mesh, rules)
    if is_model_dir(path):
        return load_model(path, shardings)
    return hf.from_pretrained(path, shardings=shardings, **hf_kwargs)


def load_model_and_tokenizer(path: str | Path, mesh=None, rules=None, **hf_kwargs):
    """(config, params, tokenizer) from a checkpoint directory holding its tokenizer.

    Checks that the model has an embedding row for every id the tokenizer emits.
    """
    from reasonjax.models.tokenizer import check_vocab, load_tokenizer

    if not Path(path).is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory; give a HF or reasonjax "
                              "model directory")
    tokenizer = load_tokenizer(path)
    config, params = load_checkpoint(path, mesh=mesh, rules=rules, **hf_kwargs)
    check_vocab(config.vocab_size, tokenizer, where=f"checkpoint {path}")
    return config, params, tokenizer


def convert(src: str | Path, dst: str | Path, to: str, overwrite: bool = False) -> Path:
    """``to='orbax'``: HF directory -> reasonjax model directory; ``to='hf'``: back. The
    destination is written whole or not at all; an existing one is refused (before any
    work) unless ``overwrite``."""
    src, dst = Path(src), Path(dst)
    if to not in ("orbax", "hf"):
        raise ValueError(f"convert: to must be 'orbax' or 'hf', got {to!r}")
    refuse_existing(dst.absolute(), overwrite)
    if dst.absolute() == src.absolute() or src.absolute() in dst.absolute().parents:
        raise ValueError(f"convert: destination {dst} is (inside) the source {src}; choose "
                         "another path")
    if to == "orbax":
        config, params = hf.from_pretrained(src)
        return save_model(dst, config, params, tokenizer_dir=src, overwrite=overwrite)
    config, params = load_model(src)
    return hf.save_pretrained(config, params, dst, copy_tokenizer_from=src,
                              overwrite=overwrite)


# ---------------------------------------------------------------------------------------
# Train-state checkpoints


def make_manager(directory: str | Path, max_to_keep: Optional[int] = 3,
                 async_save: bool = True) -> ocp.CheckpointManager:
    """An orbax CheckpointManager keeping the last ``max_to_keep`` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save_state(manager: ocp.CheckpointManager, step: int, state,
               data_state: Optional[dict] = None, force: bool = False) -> bool:
    """Saves the train state (any pytree of arrays) and the data iterator's JSON state."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
        items["data"] = ocp.args.JsonSave(data_state)
    return manager.save(step, args=ocp.args.Composite(**items), force=force)


QUARANTINE = "corrupt"  # where unreadable train-state checkpoints are moved


def restore_intact(manager: ocp.CheckpointManager, target, warn=warn):
    """(state, data_state, step) from the newest checkpoint of ``manager`` that restores,
    or None when there is none. Each unreadable newer one is moved to
    ``<directory>/../corrupt/<step>-<time>`` (so a resumed run can save that step again)
    with ``warn(message)`` saying which and why. A checkpoint of another model (tensor
    shapes differ from ``target``) is not corruption: it raises CheckpointError."""
    import time

    directory = Path(manager.directory)
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            saved = _saved_tree(directory / str(step) / "state")
        except CheckpointError:
            saved = None  # unreadable: the restore below fails and moves it aside
        if saved is not None:
            check_shapes(saved, target, f"{directory}/{step}",
                         "the run directory holds a run of another model; use the same "
                         "--model, or a new run directory")
        try:
            state, data_state = restore_state(manager, target, step)
            return state, data_state, step
        except CheckpointError:
            raise
        except Exception as e:
            moved = directory.parent / QUARANTINE / f"{step}-{int(time.time())}"
            moved.parent.mkdir(parents=True, exist_ok=True)
            (directory / str(step)).rename(moved)
            manager.reload()
            warn(f"checkpoint step {step} in {directory} cannot be restored "
                 f"({first_line(e, 160)}); moved it to {moved} and trying the one before")
    return None


def restore_state(manager: ocp.CheckpointManager, target, step: Optional[int] = None):
    """Restores (state, data_state or None) at ``step`` (default: the latest).

    ``target`` is a pytree of arrays or ShapeDtypeStructs (with the shardings to restore
    onto). Returns None when the manager has no checkpoint.
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        return None
    items = {"state": ocp.args.StandardRestore(abstract_tree(target))}
    has_data = (Path(manager.directory) / str(step) / "data").exists()
    if has_data:
        items["data"] = ocp.args.JsonRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], (restored["data"] if has_data else None)
