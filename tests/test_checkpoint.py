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
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "x"), "--to", "orbax"]) == 5
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


def test_convert_keeps_the_character_tokenizer_and_the_result_searches(tmp_path):
    from reasonjax.models import CharTokenizer

    tok = CharTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=16, n_layers=1, n_heads=2,
                      n_kv_heads=1, d_ff=32, max_seq_len=64)
    tok.save(tmp_path / "tok")
    checkpoint.save_model(tmp_path / "m", cfg, init_params(cfg, jax.random.key(0)),
                          tokenizer_dir=tmp_path / "tok")
    assert main(["convert", str(tmp_path / "m"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert (tmp_path / "hf" / "char_tokenizer.json").is_file()
    assert main(["search", str(tmp_path / "hf"), "--task", "arithmetic", "--count", "1",
                 "--method", "greedy", "--max-steps", "1", "--step-tokens", "4",
                 "--no-progress", "--out", str(tmp_path / "o.jsonl")]) == 0


def test_written_model_directories_get_ordinary_permissions(tmp_path):
    import stat

    from reasonjax.fileio import _UMASK

    checkpoint.save_model(tmp_path / "m", CFG, init_params(CFG, jax.random.key(0)))
    save_pretrained(CFG, init_params(CFG, jax.random.key(0)), tmp_path / "hf")
    for root in (tmp_path / "m", tmp_path / "hf"):
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            want = (0o777 if p.is_dir() else 0o666) & ~_UMASK   # 0755 / 0644 under umask 022
            assert mode == want, (p, oct(mode))


def test_load_model_refuses_non_finite_weights_by_tensor(tmp_path):
    params = init_params(CFG, jax.random.key(0))
    params["final_norm"]["scale"] = params["final_norm"]["scale"].at[3].set(jnp.inf)
    checkpoint.save_model(tmp_path / "m", CFG, params)
    with pytest.raises(checkpoint.CheckpointError, match=r"tensor final_norm/scale holds NaN"):
        checkpoint.load_model(tmp_path / "m")


def _convert_cmd(src, dst):
    import os
    import sys
    from pathlib import Path

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return [sys.executable, "-m", "reasonjax.cli", "convert", str(src), str(dst), "--to",
            "orbax"], env


def test_a_convert_killed_mid_write_leaves_no_destination_and_the_rerun_completes(tmp_path):
    """SIGKILL as soon as the temporary destination appears: the destination is absent
    (never half-written); the rerun removes the dead process's temporary and writes it
    whole."""
    import os
    import signal
    import subprocess
    import time

    cfg = ModelConfig(vocab_size=256, d_model=512, n_layers=4, n_heads=8, n_kv_heads=4,
                      d_ff=2048, max_seq_len=64)               # ~17M params: a slow write
    params = init_params(cfg, jax.random.key(0))
    save_pretrained(cfg, params, tmp_path / "hf")
    dst = tmp_path / "out"
    cmd, env = _convert_cmd(tmp_path / "hf", dst)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(n.startswith(".out.tmp-") for n in os.listdir(tmp_path)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    assert proc.wait(60) == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not dst.exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".out.tmp-")]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert sorted(os.listdir(tmp_path)) == ["hf", "out"]        # the stale temporary is gone
    _, restored = checkpoint.load_model(dst)
    _assert_same(restored, params)
