"""HF checkpoints: logits parity with transformers (PyTorch), export, sharded files, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from reasonjax.models import CheckpointError, Transformer, from_pretrained, save_pretrained

SMALL = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64)
FAMILIES = {
    # GQA, untied embeddings, Llama-3.1 RoPE scaling
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    # QKV bias, tied embeddings
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
        tie_word_embeddings=True, rope_theta=1000000.0)),
    # sliding window shorter than the sequence
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(
        tie_word_embeddings=False, sliding_window=5)),
}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    out = {}
    for i, (family, (cfg_cls, model_cls, extra)) in enumerate(FAMILIES.items()):
        torch.manual_seed(i)
        model = model_cls(cfg_cls(**SMALL, **extra)).eval()
        if family == "qwen2":  # transformers initialises biases to zero: make them count
            with torch.no_grad():
                for layer in model.model.layers:
                    for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                                 layer.self_attn.v_proj):
                        proj.bias.normal_(0, 0.5)
        d = tmp_path_factory.mktemp(family)
        model.save_pretrained(d)
        out[family] = (d, model, model_cls)
    return out


def _batch():
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, 97, (3, 12))
    mask = np.ones((3, 12), np.int64)
    mask[1, :4] = 0   # left padding
    mask[2, 9:] = 0   # right padding
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    return tokens, mask, positions


def _torch_logits(model, tokens, mask, positions):
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_match_transformers_on_padded_batch(hf_dirs, family, tmp_path):
    path, model, model_cls = hf_dirs[family]
    tokens, mask, positions = _batch()
    ref = _torch_logits(model, tokens, mask, positions)
    config, params = from_pretrained(path)
    assert config.family == family
    out = Transformer(config).apply({"params": params}, jnp.asarray(tokens),
                                    positions=jnp.asarray(positions),
                                    attention_mask=jnp.asarray(mask))
    diff = np.abs(np.asarray(out.logits) - ref) * mask[..., None]
    assert diff.max() < 1e-4, diff.max()

    # Our export loads in transformers and gives the same logits.
    save_pretrained(config, params, tmp_path / "export")
    reloaded = model_cls.from_pretrained(tmp_path / "export").eval()
    ref2 = _torch_logits(reloaded, tokens, mask, positions)
    assert (np.abs(ref2 - ref) * mask[..., None]).max() < 1e-6


def test_value_head_zero_when_absent_and_round_trips(hf_dirs, tmp_path):
    config, params = from_pretrained(hf_dirs["llama"][0])
    np.testing.assert_array_equal(params["value_head"]["kernel"], 0.0)
    params["value_head"] = {"kernel": jnp.arange(config.d_model, dtype=jnp.float32)[:, None],
                            "bias": jnp.asarray([0.25])}
    save_pretrained(config, params, tmp_path / "v")
    _, back = from_pretrained(tmp_path / "v")
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_sharded_checkpoint_files_round_trip(hf_dirs, tmp_path):
    config, params = from_pretrained(hf_dirs["qwen2"][0])
    save_pretrained(config, params, tmp_path / "s", max_shard_bytes=40_000)
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    _, back = from_pretrained(tmp_path / "s")
    jax.tree.map(np.testing.assert_array_equal, back, params)
    tokens, mask, positions = _batch()
    reloaded = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "s").eval()
    np.testing.assert_allclose(_torch_logits(reloaded, tokens, mask, positions),
                               _torch_logits(hf_dirs["qwen2"][1], tokens, mask, positions),
                               atol=1e-6)


def test_bfloat16_checkpoint_loads_in_bfloat16(hf_dirs, tmp_path):
    config, params = from_pretrained(hf_dirs["llama"][0])
    save_pretrained(config, params, tmp_path / "bf16", dtype="bfloat16")
    cfg16, p16 = from_pretrained(tmp_path / "bf16")
    assert cfg16.param_dtype == "bfloat16" and cfg16.dtype == "bfloat16"
    assert p16["embed"]["embedding"].dtype == jnp.bfloat16
    a = np.asarray(p16["embed"]["embedding"], np.float32)
    np.testing.assert_allclose(a, params["embed"]["embedding"], rtol=1e-2, atol=1e-3)


# --- bad inputs: one clear message each ------------------------------------------------


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_config_json(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="has no config.json"):
        from_pretrained(tmp_path)


def test_unknown_architecture(hf_dirs, tmp_path):
    d = _copy(hf_dirs["llama"][0], tmp_path / "gpt2")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"GPT2LMHeadModel.*not supported.*LlamaForCausalLM"):
        from_pretrained(d)


def test_tensor_with_wrong_shape(hf_dirs, tmp_path):
    d = _copy(hf_dirs["llama"][0], tmp_path / "bad")
    tensors = load_file(d / "model.safetensors")
    name = "model.layers.1.self_attn.k_proj.weight"
    tensors[name] = tensors[name][:16]
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError,
                       match=r"k_proj.weight.*shape \(16, 64\), expected \(32, 64\)"):
        from_pretrained(d)


def test_missing_tensor_and_unused_tensor(hf_dirs, tmp_path):
    d = _copy(hf_dirs["llama"][0], tmp_path / "missing")
    tensors = load_file(d / "model.safetensors")
    del tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'model.layers.0.mlp.up_proj.weight' is missing"):
        from_pretrained(d)
    d = _copy(hf_dirs["llama"][0], tmp_path / "extra")
    tensors = load_file(d / "model.safetensors")
    tensors["vision_tower.weight"] = np.zeros(3, np.float32)
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match="vision_tower.weight"):
        from_pretrained(d)
    _, params = from_pretrained(d, strict=False)
    assert "embed" in params


def test_integer_weights_and_pickles_are_refused(hf_dirs, tmp_path):
    d = _copy(hf_dirs["llama"][0], tmp_path / "int8")
    tensors = load_file(d / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int8)
    save_file(tensors, d / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.norm.weight.*dtype int8"):
        from_pretrained(d)
    p = tmp_path / "pickled"
    p.mkdir()
    (p / "config.json").write_text((hf_dirs["llama"][0] / "config.json").read_text())
    (p / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(CheckpointError, match="pickled weights are never loaded"):
        from_pretrained(p)


def test_failed_export_leaves_no_partial_directory(hf_dirs, tmp_path, monkeypatch):
    config, params = from_pretrained(hf_dirs["llama"][0])
    save_pretrained(config, params, tmp_path / "out")
    before = (tmp_path / "out" / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("reasonjax.models.hf.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(config, params, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
