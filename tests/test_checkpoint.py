"""Orbax checkpoints: restore onto another mesh, train-state manager, HF <-> orbax convert."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from reasonjax import checkpoint, parallel
from reasonjax.cli import main
from reasonjax.models import ModelConfig, init_params, save_pretrained

CFG = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                  max_seq_len=64)


def _assert_same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_save_on_one_mesh_restore_on_another(tmp_path):
    mesh_a = parallel.make_mesh(parallel.MeshConfig(2, 2, 2))
    params = parallel.init_params(CFG, jax.random.key(0), mesh_a)
    checkpoint.save_model(tmp_path / "m", CFG, params)
    for shape in [(1, 4, 2), (8, 1, 1)]:
        mesh_b = parallel.make_mesh(parallel.MeshConfig(*shape))
        cfg, restored = checkpoint.load_checkpoint(tmp_path / "m", mesh=mesh_b)
        assert cfg == CFG
        _assert_same(restored, params)
        q = restored["layers"]["attn"]["q"]["kernel"]
        assert q.sharding.mesh.shape == mesh_b.shape
        assert q.sharding == parallel.param_shardings(CFG, mesh_b)["layers"]["attn"]["q"]["kernel"]
    cfg, single = checkpoint.load_model(tmp_path / "m")
    _assert_same(single, params)


def test_train_state_manager_keeps_last_n_and_restores_data_state(tmp_path):
    mngr = checkpoint.make_manager(tmp_path / "ckpt", max_to_keep=2)
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3)}, "step": jnp.asarray(0)}
    for step in range(1, 4):
        state = jax.tree.map(lambda x: x + 1, state)
        checkpoint.save_state(mngr, step, state, data_state={"next_index": step * 10})
    mngr.wait_until_finished()
    assert mngr.all_steps() == [2, 3]
    target = jax.tree.map(jnp.zeros_like, state)
    restored, data = checkpoint.restore_state(mngr, target)
    _assert_same(restored, state)
    assert data == {"next_index": 30}
    older, data2 = checkpoint.restore_state(mngr, target, step=2)
    np.testing.assert_array_equal(older["step"], 2)
    assert data2 == {"next_index": 20}
    assert checkpoint.restore_state(checkpoint.make_manager(tmp_path / "empty"), target) is None


def test_convert_hf_orbax_hf_round_trips_identical_tensors(tmp_path, capsys):
    params = init_params(CFG, jax.random.key(1))
    params["value_head"]["kernel"] = jnp.ones_like(params["value_head"]["kernel"])
    save_pretrained(CFG, params, tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").write_text("{}")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "orbax"), "--to", "orbax"]) == 0
    assert main(["convert", str(tmp_path / "orbax"), str(tmp_path / "hf2"), "--to", "hf"]) == 0
    a = load_file(tmp_path / "hf" / "model.safetensors")
    b = load_file(tmp_path / "hf2" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])
    assert (tmp_path / "hf2" / "tokenizer.json").read_text() == "{}"
    assert "wrote" in capsys.readouterr().out


def test_convert_reports_missing_source(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "x"), "--to", "orbax"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_load_model_rejects_plain_directory(tmp_path):
    with pytest.raises(ValueError, match="has no model_config.json"):
        checkpoint.load_model(tmp_path)


def test_tokenizer_with_more_ids_than_the_model_is_refused(tmp_path):
    from reasonjax.models import CharTokenizer, TokenizerError

    small = CFG.replace(vocab_size=64)
    checkpoint.save_model(tmp_path / "m", small, init_params(small, jax.random.key(0)))
    CharTokenizer().save(tmp_path / "m")
    with pytest.raises(TokenizerError, match=r"checkpoint .*m vocab_size 64 is smaller than "
                                             r"the tokenizer's 100 ids"):
        checkpoint.load_model_and_tokenizer(tmp_path / "m")
    checkpoint.save_model(tmp_path / "ok", CFG, init_params(CFG, jax.random.key(0)))
    CharTokenizer().save(tmp_path / "ok")
    cfg, _, tok = checkpoint.load_model_and_tokenizer(tmp_path / "ok")
    assert cfg.vocab_size == 128 and tok.vocab_size == 100
