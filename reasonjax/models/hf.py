"""Hugging Face checkpoints (Llama, Qwen2, Mistral) to and from reasonjax params.

Reads a local HF directory (``config.json`` + ``model.safetensors`` or a sharded
``model.safetensors.index.json``) and writes one that transformers loads. Safetensors
only: pickled ``pytorch_model.bin`` files are never opened. The value head is stored as
``value_head.weight`` [1, D] and ``value_head.bias`` [1]; when a checkpoint has none it is
initialised to zeros.

Tensors are memory-mapped and placed one at a time (onto their shardings when a mesh is
given), so a checkpoint never needs to fit twice in host memory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from reasonjax.errors import CheckpointError  # noqa: F401  (re-exported)
from reasonjax.fileio import atomic_dir, read_json, refuse_existing
from reasonjax.models.config import ModelConfig, RopeScaling

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
}
_FAMILY_ARCH = {v: k for k, v in ARCHITECTURES.items()}
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
# Tensors some checkpoints carry that hold nothing the model needs.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
# Files copied alongside the weights so the directory stays a usable checkpoint.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json", "generation_config.json", "vocab.json",
                   "merges.txt", "added_tokens.json", "chat_template.jinja",
                   "char_tokenizer.json")


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> None:
    """Copies the :data:`TOKENIZER_FILES` that directory ``src`` holds into ``dst``."""
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)


# ---------------------------------------------------------------------------------------
# config.json <-> ModelConfig


def _rope_from_hf(hf: dict, path: Path) -> tuple[float, Optional[RopeScaling]]:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    spec = params if params.get("rope_type", "default") != "default" else scaling
    kind = spec.get("rope_type", spec.get("type", "default")) if spec else "default"
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling(type="linear", factor=float(spec["factor"]))
    if kind == "llama3":
        return theta, RopeScaling(
            type="llama3", factor=float(spec["factor"]),
            low_freq_factor=float(spec["low_freq_factor"]),
            high_freq_factor=float(spec["high_freq_factor"]),
            original_max_position_embeddings=int(spec["original_max_position_embeddings"]))
    raise CheckpointError(
        f"{path}/config.json: rope type {kind!r} is not supported (supported: default, "
        "linear, llama3)")


def config_from_hf(hf: dict, path: Path | str = "<config>", *, dtype: Optional[str] = None,
                   param_dtype: Optional[str] = None) -> ModelConfig:
    """ModelConfig from a parsed HF ``config.json``; unsupported features raise."""
    path = Path(path)
    archs = hf.get("architectures") or []
    arch = next((a for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        model_type = hf.get("model_type")
        family = model_type if model_type in _FAMILY_ARCH else None
        if family is None:
            raise CheckpointError(
                f"{path}/config.json: architecture {archs or model_type!r} is not supported; "
                f"supported: {sorted(ARCHITECTURES)}")
    else:
        family = ARCHITECTURES[arch]
    where = f"{path}/config.json"
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported "
                              "(the Llama family uses silu)")
    if hf.get("mlp_bias"):
        raise CheckpointError(f"{where}: mlp_bias=true is not supported")
    if family == "llama" and hf.get("attention_bias"):
        raise CheckpointError(f"{where}: attention_bias=true (bias on o_proj) is not supported")
    if family == "qwen2" and hf.get("use_sliding_window"):
        raise CheckpointError(f"{where}: use_sliding_window=true is not supported for Qwen2")
    try:
        theta, scaling = _rope_from_hf(hf, path)
        heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        ckpt_dtype = _DTYPES.get(str(hf.get("dtype", hf.get("torch_dtype", "float32"))),
                                 "float32")
        param_dtype = param_dtype or ckpt_dtype
        return ModelConfig(
            vocab_size=int(hf["vocab_size"]), d_model=hidden,
            n_layers=int(hf["num_hidden_layers"]), n_heads=heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            d_ff=int(hf["intermediate_size"]), rope_theta=theta, rope_scaling=scaling,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=family == "qwen2",
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
            sliding_window=(hf.get("sliding_window") if family == "mistral" else None),
            family=family, dtype=dtype or param_dtype, param_dtype=param_dtype)
    except KeyError as e:
        raise CheckpointError(f"{where}: missing field {e.args[0]!r}") from None


def config_to_hf(cfg: ModelConfig, dtype: str) -> dict:
    """HF ``config.json`` content for ``cfg`` (readable by transformers 4.x and 5.x)."""
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    legacy_scaling = None
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        extra = {"factor": s.factor}
        if s.type == "llama3":
            extra.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                         original_max_position_embeddings=s.original_max_position_embeddings)
        rope.update(rope_type=s.type, **extra)
        legacy_scaling = {"rope_type": s.type, **extra}
    hf = {
        "architectures": [_FAMILY_ARCH[cfg.family]],
        "model_type": cfg.family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.dim_per_head,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_embeddings,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": legacy_scaling,
        "rope_parameters": rope,
        "dtype": dtype,
        "torch_dtype": dtype,
    }
    if cfg.family == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    if cfg.family == "mistral":
        hf["sliding_window"] = cfg.sliding_window
    if cfg.family == "qwen2":
        hf.update(use_sliding_window=False, sliding_window=None)
    return hf


# ---------------------------------------------------------------------------------------
# Tensor layout: one row per parameter.


@dataclass(frozen=True)
class _Tensor:
    path: tuple[str, ...]           # our param path
    hf: str                         # HF name, "{i}" for the layer index
    hf_shape: Callable[[ModelConfig], tuple]
    to_ours: Callable[[np.ndarray, ModelConfig], np.ndarray]
    to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]
    layered: bool = False


def _heads_in(n: Callable[[ModelConfig], int]):
    """HF [n*Dh, D] <-> ours [D, n, Dh]."""
    return (lambda w, c: w.reshape(n(c), c.dim_per_head, c.d_model).transpose(2, 0, 1),
            lambda w, c: w.transpose(1, 2, 0).reshape(n(c) * c.dim_per_head, c.d_model))


def _table(cfg: ModelConfig) -> list[_Tensor]:
    H = lambda c: c.n_heads
    K = lambda c: c.n_kv_heads
    same = lambda w, c: w
    T = lambda w, c: w.T
    rows = [
        _Tensor(("embed", "embedding"), "model.embed_tokens.weight",
                lambda c: (c.vocab_size, c.d_model), same, same),
        _Tensor(("final_norm", "scale"), "model.norm.weight", lambda c: (c.d_model,), same, same),
        _Tensor(("layers", "attn_norm", "scale"), "model.layers.{i}.input_layernorm.weight",
                lambda c: (c.d_model,), same, same, True),
        _Tensor(("layers", "mlp_norm", "scale"),
                "model.layers.{i}.post_attention_layernorm.weight",
                lambda c: (c.d_model,), same, same, True),
        _Tensor(("layers", "attn", "q", "kernel"), "model.layers.{i}.self_attn.q_proj.weight",
                lambda c: (c.n_heads * c.dim_per_head, c.d_model), *_heads_in(H), True),
        _Tensor(("layers", "attn", "k", "kernel"), "model.layers.{i}.self_attn.k_proj.weight",
                lambda c: (c.n_kv_heads * c.dim_per_head, c.d_model), *_heads_in(K), True),
        _Tensor(("layers", "attn", "v", "kernel"), "model.layers.{i}.self_attn.v_proj.weight",
                lambda c: (c.n_kv_heads * c.dim_per_head, c.d_model), *_heads_in(K), True),
        _Tensor(("layers", "attn", "o", "kernel"), "model.layers.{i}.self_attn.o_proj.weight",
                lambda c: (c.d_model, c.n_heads * c.dim_per_head),
                lambda w, c: w.T.reshape(c.n_heads, c.dim_per_head, c.d_model),
                lambda w, c: w.reshape(c.n_heads * c.dim_per_head, c.d_model).T, True),
        _Tensor(("layers", "mlp", "gate", "kernel"), "model.layers.{i}.mlp.gate_proj.weight",
                lambda c: (c.d_ff, c.d_model), T, T, True),
        _Tensor(("layers", "mlp", "up", "kernel"), "model.layers.{i}.mlp.up_proj.weight",
                lambda c: (c.d_ff, c.d_model), T, T, True),
        _Tensor(("layers", "mlp", "down", "kernel"), "model.layers.{i}.mlp.down_proj.weight",
                lambda c: (c.d_model, c.d_ff), T, T, True),
        _Tensor(("value_head", "kernel"), "value_head.weight", lambda c: (1, c.d_model), T, T),
        _Tensor(("value_head", "bias"), "value_head.bias", lambda c: (1,), same, same),
    ]
    if cfg.qkv_bias:
        for name, n in (("q", H), ("k", K), ("v", K)):
            rows.append(_Tensor(
                ("layers", "attn", name, "bias"), f"model.layers.{{i}}.self_attn.{name}_proj.bias",
                lambda c, n=n: (n(c) * c.dim_per_head,),
                lambda w, c, n=n: w.reshape(n(c), c.dim_per_head),
                lambda w, c: w.reshape(-1), True))
    if not cfg.tie_embeddings:
        rows.append(_Tensor(("lm_head", "kernel"), "lm_head.weight",
                            lambda c: (c.vocab_size, c.d_model), T, T))
    return rows


# ---------------------------------------------------------------------------------------
# Reading


def _weight_files(path: Path) -> dict[str, Path]:
    """Maps every tensor name to the safetensors file holding it."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, CheckpointError).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' mapping")
        missing = sorted({f for f in weight_map.values() if not (path / f).is_file()})
        if missing:
            raise CheckpointError(f"{index} names shard file(s) {missing} that do not exist")
        return {name: path / f for name, f in weight_map.items()}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f"; found {pickled}: pickled weights are never loaded, convert them to "
                "safetensors first" if pickled else "")
        raise CheckpointError(f"{path}: no *.safetensors weights{hint}")
    out = {}
    for f in files:
        with _open_safetensors(f) as sf:
            for name in sf.keys():
                out[name] = f
    return out


def _open_safetensors(f: Path):
    try:
        return safe_open(f, "np")
    except Exception as e:  # safetensors raises its own SafetensorError on bad headers
        raise CheckpointError(f"{f}: not a readable safetensors file ({e}); the file is "
                              "truncated or corrupt, copy or convert it again") from None


class _Reader:
    """Opens each shard once and hands out memory-mapped tensors."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        self._open = {}

    def _file(self, name: str):
        f = self.files[name]
        if f not in self._open:
            self._open[f] = _open_safetensors(f)
        return f, self._open[f]

    def get(self, name: str) -> np.ndarray:
        f, handle = self._file(name)
        try:
            w = handle.get_tensor(name)
        except Exception as e:
            raise CheckpointError(f"{f}: tensor {name!r} cannot be read ({e}); the file is "
                                  "truncated or corrupt") from None
        if w.dtype.kind == "f" or str(w.dtype) == "bfloat16":
            finite = np.isfinite(w.astype(np.float32) if w.dtype.kind != "f" else w)
            if not finite.all():
                raise CheckpointError(
                    f"{f}: tensor {name!r} holds {int((~finite).sum())} NaN/Inf value(s); "
                    "a model with non-finite weights is refused (use an intact checkpoint)")
        return w

    def shape(self, name: str) -> tuple:
        _, handle = self._file(name)
        return tuple(handle.get_slice(name).get_shape())


def read_hf_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; expected a HF model directory "
                              "(config.json + *.safetensors)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json; expected a HF model directory "
                              "(config.json + *.safetensors)")
    return read_json(cfg_file, CheckpointError)


def from_pretrained(path: str | Path, *, dtype: Optional[str] = None,
                    param_dtype: Optional[str] = None, shardings=None, strict: bool = True):
    """Loads a local HF checkpoint. Returns ``(config, params)``.

    dtype / param_dtype: compute and storage dtypes (default: the checkpoint's dtype).
    shardings: optional pytree of ``jax.sharding.Sharding`` matching the params (see
    ``parallel.param_shardings``); each tensor is placed directly onto its sharding.
    strict: unknown tensors in the checkpoint are an error (nothing is silently dropped).
    """
    path = Path(path)
    config = config_from_hf(read_hf_config(path), path, dtype=dtype, param_dtype=param_dtype)
    reader = _Reader(_weight_files(path))
    table = _table(config)
    np_dtype = jnp.dtype(config.param_dtype)

    def load(row: _Tensor, name: str) -> np.ndarray:
        if name not in reader.files:
            raise CheckpointError(
                f"{path}: tensor {name!r} is missing; a {config.family} checkpoint with this "
                "config.json needs it")
        shape = reader.shape(name)
        want = row.hf_shape(config)
        if shape != want:
            raise CheckpointError(
                f"{path}: tensor {name!r} in {reader.files[name].name} has shape {shape}, "
                f"expected {want} from config.json")
        w = reader.get(name)
        if w.dtype.kind not in "f" and str(w.dtype) != "bfloat16":
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {w.dtype}; only float32/bfloat16/float16 "
                "weights can be loaded (dequantize the checkpoint first)")
        return row.to_ours(w, config).astype(np_dtype)

    flat_shardings = _flatten(shardings) if shardings is not None else {}
    params: dict = {}
    used = set()
    for row in table:
        if row.layered:
            names = [row.hf.format(i=i) for i in range(config.n_layers)]
            arr = np.stack([load(row, n) for n in names])
        else:
            names = [row.hf]
            if row.path[0] == "value_head" and row.hf not in reader.files:
                arr = np.zeros(row.to_ours(np.zeros(row.hf_shape(config)), config).shape,
                               np_dtype)
                names = []
            else:
                arr = load(row, row.hf)
        used.update(names)
        sharding = flat_shardings.get(row.path)
        value = jax.device_put(arr, sharding) if sharding is not None else jnp.asarray(arr)
        _set(params, row.path, value)
    unused = sorted(n for n in reader.files if n not in used
                    and not n.endswith(_IGNORED_SUFFIXES)
                    and not (config.tie_embeddings and n == "lm_head.weight"))
    if unused and strict:
        raise CheckpointError(
            f"{path}: {len(unused)} tensor(s) not used by a {config.family} model, e.g. "
            f"{unused[:5]}; pass strict=False to ignore them")
    return config, params


def _set(tree: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _flatten(tree, prefix=()) -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, prefix + (k,)))
        return out
    return {prefix: tree}


# ---------------------------------------------------------------------------------------
# Writing


def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


def save_pretrained(config: ModelConfig, params, path: str | Path, *,
                    dtype: Optional[str] = None, max_shard_bytes: int = 5 * 2**30,
                    copy_tokenizer_from: Optional[str | Path] = None,
                    overwrite: bool = False) -> Path:
    """Writes a HF checkpoint directory transformers can load.

    The directory is written beside ``path`` and moved into place at the end, so a crash
    never leaves a half-written checkpoint. ``dtype`` defaults to ``config.param_dtype``.
    Tokenizer files are copied from ``copy_tokenizer_from`` when given. An existing
    ``path`` is refused unless ``overwrite``. On multi-host runs every process must call
    this (to gather shards); only process 0 writes.
    """
    path = Path(path)
    refuse_existing(path.absolute(), overwrite)
    dtype = dtype or config.param_dtype
    np_dtype = jnp.dtype(dtype)
    flat = _flatten(params)
    tensors: dict[str, np.ndarray] = {}
    for row in _table(config):
        if row.path not in flat:
            raise CheckpointError(f"params have no entry {'/'.join(row.path)}; they do not "
                                  f"match the config ({config.family}, tie_embeddings="
                                  f"{config.tie_embeddings}, qkv_bias={config.qkv_bias})")
        arr = _to_host(flat[row.path])
        if row.layered:
            for i in range(config.n_layers):
                tensors[row.hf.format(i=i)] = np.ascontiguousarray(
                    row.to_hf(arr[i], config).astype(np_dtype))
        else:
            tensors[row.hf] = np.ascontiguousarray(row.to_hf(arr, config).astype(np_dtype))
    if jax.process_index() != 0:
        return path

    with atomic_dir(path, overwrite=overwrite) as tmp:
        shards: list[dict[str, np.ndarray]] = [{}]
        size = 0
        for name, arr in tensors.items():
            if size + arr.nbytes > max_shard_bytes and shards[-1]:
                shards.append({})
                size = 0
            shards[-1][name] = arr
            size += arr.nbytes
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards):
                fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / fname), metadata={"format": "pt"})
                weight_map.update({n: fname for n in shard})
            index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
                     "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (tmp / "config.json").write_text(json.dumps(config_to_hf(config, dtype), indent=2))
        if copy_tokenizer_from is not None:
            copy_tokenizer_files(copy_tokenizer_from, tmp)
    return path


def is_hf_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    if not (path / "config.json").is_file():
        return False
    try:
        hf = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError:
        return False
    return "model_type" in hf or "architectures" in hf
