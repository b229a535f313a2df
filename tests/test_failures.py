"""Bad inputs across the CLI, tried as a hostile user would: each case asserts the exit
code of its kind (reasonjax.errors), at most two lines on stderr and no traceback, that
the message names the right file / field / tensor, and that nothing that existed before
(the case's workspace and the shared checkpoints) was changed, lost or left beside
temporaries."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable, Optional

import jax
import numpy as np
import pytest

from reasonjax.checkpoint import save_model
from reasonjax.cli import main
from reasonjax.models import CharTokenizer, ModelConfig, init_params
from reasonjax.models.hf import save_pretrained

TOK = CharTokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                  d_ff=32, max_seq_len=64)
GSM = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(6)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Read-only inputs the cases point at: a reasonjax model dir, a HF dir, a data file,
    and a finished 2-step SFT run (copied by the cases that reuse it)."""
    root = tmp_path_factory.mktemp("shared")
    params = init_params(CFG, jax.random.key(0))
    TOK.save(root / "tok")
    save_model(root / "model", CFG, params, tokenizer_dir=root / "tok")
    save_pretrained(CFG, params, root / "hf", copy_tokenizer_from=root / "tok")
    (root / "gsm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM))
    assert main(["train", "sft", "--task", "arithmetic", "--model", "tiny-100k", "--run-dir",
                 str(root / "sft"), "--steps", "2", "--batch-size", "4", "--seq-len", "48",
                 "--no-progress"]) == 0
    return root


def _tree(path: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (and '<dir>' for directories) under path."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --- setups: each takes (workspace, shared) and prepares files ----------------------------

def _write(name: str, text: str | bytes):
    def setup(ws: Path, shared: Path):
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (ws / name).write_bytes(text)
        else:
            (ws / name).write_text(text)
    return setup


def _copy(name: str, to: Optional[str] = None):
    def setup(ws: Path, shared: Path):
        src, dst = shared / name, ws / (to or name)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    return setup


def _both(*setups):
    def setup(ws: Path, shared: Path):
        for s in setups:
            s(ws, shared)
    return setup


def _edit_json(name: str, change: Callable[[dict], object]):
    def setup(ws: Path, shared: Path):
        f = ws / name
        f.write_text(json.dumps(change(json.loads(f.read_text()))))
    return setup


def _truncate(pattern: str, keep: float = 0.5):
    def setup(ws: Path, shared: Path):
        files = [f for f in ws.glob(pattern) if f.is_file()]
        assert files, pattern
        for f in files:
            f.write_bytes(f.read_bytes()[:int(f.stat().st_size * keep)])
    return setup


def _nan_hf(ws: Path, shared: Path):
    from safetensors.numpy import load_file, save_file

    f = ws / "hf" / "model.safetensors"
    tensors = load_file(str(f))
    name = sorted(tensors)[3]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = np.nan
    save_file(tensors, str(f), metadata={"format": "pt"})


def _parquet(rows: int = 200):
    def setup(ws: Path, shared: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"question": [f"q{i} " * 20 for i in range(rows)],
                          "answer": [f"#### {i}" for i in range(rows)]})
        pq.write_table(table, ws / "data.parquet", row_group_size=50)
    return setup


def _corrupt_middle(name: str):
    def setup(ws: Path, shared: Path):
        f = ws / name
        data = bytearray(f.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 400] = b"\xff" * 400
        f.write_bytes(bytes(data))
    return setup


def _open_recipe_run(overrides=(), phase: bool = True, name: str = "run"):
    """A coverage run directory opened with ``overrides`` (and one completed phase)."""
    def setup(ws: Path, shared: Path):
        from reasonjax.recipes.replicate import load_config
        from reasonjax.recipes.rundir import open_run, run_phase

        run = open_run(ws / name, load_config("coverage", "tiny", list(overrides)))
        if phase:
            run_phase(run, "warmup-done", lambda: {"x": 1})
    return setup


def _raise(target: str, exc: BaseException):
    def patch(monkeypatch):
        def boom(*a, **k):
            raise exc
        monkeypatch.setattr(target, boom)
    return patch


@dataclasses.dataclass
class Case:
    """argv uses {ws} (the case's workspace) and {shared}; ``needles``: substrings of the
    error line; ``creates``: the case may add files (a run dir it refused to finish)."""

    name: str
    argv: str
    code: int
    needles: tuple = ()
    setup: Optional[Callable] = None
    patch: Optional[Callable] = None
    creates: bool = False


S = ("search {shared}/model --task arithmetic --count 2 --method greedy --no-progress "
     "--max-steps 1 --step-tokens 4")
T = "train sft --task arithmetic --model tiny-100k --no-progress --run-dir {ws}/run"
R = "replicate coverage --run-dir {ws}/run"
L = "search {shared}/model --method greedy --format gsm8k --local"

CASES = [
    # ---- arguments and config (2) ---------------------------------------------------
    Case("accum_over_steps", T + " --steps 2 --set fit.optim.accum_steps=3", 2,
         ("fit.steps", "accum_steps=3")),
    Case("negative_lr", T + " --set fit.optim.lr=-1", 2, ("fit.optim.lr", ">= 0")),
    Case("unknown_set_key", T + " --set fit.bogus=1", 2, ("fit.bogus",)),
    Case("set_wrong_type", T + " --set fit.batch_size=abc", 2, ("fit.batch_size",)),
    Case("set_without_equals", T + " --set fit.batch_size", 2, ("key=value",)),
    Case("rl_negative_kl", "train grpo --task arithmetic --model tiny-100k --run-dir {ws}/r "
         "--set algorithm.kl_coef=-1", 2, ("kl_coef",)),
    Case("task_and_data", T + " --data {shared}/gsm.jsonl --format gsm8k", 2,
         ("exactly one of --task",)),
    Case("unknown_task", "train sft --task nosuch --model tiny-100k --run-dir {ws}/run", 2,
         ("nosuch",)),
    Case("bad_knob", T + " n_ops=0", 2, ("n_ops",)),
    Case("unknown_knob", T + " bogus=3", 2, ("bogus",)),
    Case("unknown_model", "train sft --task arithmetic --model nosuch --run-dir {ws}/run", 2,
         ("--model nosuch",)),
    Case("model_set_on_checkpoint", "train sft --task arithmetic --model {shared}/model "
         "--model-set d_model=8 --run-dir {ws}/run", 2, ("--model-set",)),
    Case("model_set_bad_key", T + " --model-set bogus=8", 2, ("bogus",)),
    Case("seq_len_one", T + " --seq-len 1", 2, ("seq_len", ">= 2")),
    Case("zero_batch", T + " --batch-size 0", 2, ("fit.batch_size", ">= 1")),
    Case("eval_negative", T + " --eval -1", 2, ("--eval",)),
    Case("eval_takes_all_data", "train sft --data {shared}/gsm.jsonl --format gsm8k "
         "--model tiny-100k --run-dir {ws}/run --eval 6", 2, ("--eval", "gsm.jsonl")),
    Case("data_without_format", "train sft --data {shared}/gsm.jsonl --model tiny-100k "
         "--run-dir {ws}/run", 2, ("--format",)),
    Case("bad_loss_choice", "train dpo --task arithmetic --model tiny-100k --run-dir {ws}/r "
         "--loss bogus", 2, ("--loss",)),
    Case("gym_bad_config_key", "data preview --task gym:chain_sum bogus=1", 2, ("bogus",)),
    Case("gym_unknown_dataset", "data preview --task gym:nosuch", 2, ("nosuch", "data list")),
    Case("gym_bad_config_value", "data preview --task gym:chain_sum min_terms=5 max_terms=2",
         2, ("max_terms must be >= min_terms",)),
    Case("local_datasetdict_root", L + " {ws}/dd", 4, ("DatasetDict", "dd/train"),
         _both(_write("dd/dataset_dict.json", '{"splits": ["train", "test"]}'),
               _write("dd/train/x.jsonl", json.dumps(GSM[0]) + "\n"))),
    Case("preview_negative_n", "data preview --task arithmetic --n -1", 2, ("--n", ">= 1")),
    Case("preview_text_n", "data preview --task arithmetic --n many", 2, ("--n",)),
    Case("search_zero_count", S + " --count 0", 2, ("--count",)),
    Case("search_zero_batch", S + " --batch-size 0", 2, ("--batch-size",)),
    Case("beam_width_not_dividing", S.replace("greedy", "beam") + " --n 3 --beam-width 2",
         2, ("beam_width",)),
    Case("negative_temperature", S.replace("greedy", "sample") + " --temperature -1", 2,
         ("temperature",)),
    Case("local_without_format", "search {shared}/model --method greedy --local "
         "{shared}/gsm.jsonl", 2, ("--format",)),
    Case("search_task_and_local", S + " --local {shared}/gsm.jsonl --format gsm8k", 2,
         ("exactly one",)),
    Case("verifier_fpr", R + " verifier.fpr=1.5", 2, ("verifier.fpr", "[0, 1]")),
    Case("warmup_steps_negative", R + " warmup.steps=-1", 2, ("warmup.steps", ">= 0")),
    Case("warmup_accum", R + " warmup.steps=2 warmup.optim.accum_steps=4", 2,
         ("warmup.steps", "accum_steps=4")),
    Case("mesh_axis_string", R + ' mesh.data="2"', 2, ("mesh.data", "integer")),
    Case("mesh_axis_zero", R + " mesh.fsdp=0", 2, ("mesh.fsdp",)),
    Case("recipe_unknown_key", R + " nosuch.key=1", 2, ("nosuch",)),
    Case("recipe_bad_seeds", R + " --seeds a,b", 2, ("--seeds",)),
    Case("recipe_rounds_zero", "replicate alphamath --run-dir {ws}/run rounds=0", 2,
         ("rounds", ">= 1")),
    Case("unknown_recipe", "replicate nosuch", 2, ("nosuch",)),
    Case("plan_unknown_topology", "plan --topology v9-8 coverage", 2, ("v9-8",)),
    Case("smoke_zero_tokens", "smoke --tokens 0 --out {ws}/s", 2, ("--tokens",)),
    Case("unknown_flag", "models --bogus", 2, ("--bogus",)),
    # ---- data files (4) -------------------------------------------------------------
    Case("local_empty", L + " {ws}/e.jsonl", 4, ("e.jsonl", "empty"), _write("e.jsonl", "")),
    Case("local_all_bad", L + " {ws}/b.jsonl", 4, ("b.jsonl", "none of the 2 records"),
         _write("b.jsonl", '{"question": 1}\n[1, 2]\n')),
    Case("local_missing", L + " {ws}/none.jsonl", 4, ("none.jsonl",)),
    Case("local_suffix", L + " {ws}/d.txt", 4, ("d.txt", "unknown file type"),
         _write("d.txt", "x")),
    Case("local_bad_json_file", L + " {ws}/d.json", 4, ("d.json:2", "invalid JSON"),
         _write("d.json", '[{"question": "a",\n "answer": }]')),
    Case("local_not_utf8", L + " {ws}/d.json", 4, ("d.json", "UTF-8"),
         _write("d.json", b'[{"question": "\xff\xfe"}]')),
    Case("local_not_parquet", L + " {ws}/d.parquet", 4, ("d.parquet", "Parquet"),
         _write("d.parquet", "not parquet at all")),
    Case("local_corrupt_parquet_pages", L + " {ws}/data.parquet", 4,
         ("data.parquet", "corrupt"), _both(_parquet(), _corrupt_middle("data.parquet"))),
    Case("local_record_too_long_fail", L + " {ws}/big.jsonl --on-error fail", 4,
         ("big.jsonl:2", "byte limit"),
         _write("big.jsonl", json.dumps(GSM[0]) + "\n" + json.dumps(
             {"question": "x" * (2**20 + 10), "answer": "#### 1"}) + "\n")),
    Case("validate_fail_first", "data validate {ws}/b.jsonl --format gsm8k --on-error fail",
         4, ("b.jsonl:1",), _write("b.jsonl", '{"question": "q"}\n')),
    Case("build_tfds_empty_dir", "data build-tfds --local {ws}/empty --format gsm8k "
         "--data-dir {ws}/tfds", 4, ("empty", "no"), _write("empty/readme.md", "x")),
    # ---- checkpoints (5) ------------------------------------------------------------
    Case("checkpoint_missing", "search {ws}/nothing --task arithmetic --method greedy", 5,
         ("nothing",)),
    Case("hf_truncated_safetensors", "search {ws}/hf --task arithmetic --method greedy", 5,
         ("model.safetensors", "truncated"), _both(_copy("hf"), _truncate("hf/*.safetensors"))),
    Case("hf_config_list", "search {ws}/hf --task arithmetic --method greedy", 5,
         ("config.json", "JSON object"), _both(_copy("hf"), _write("hf/config.json", "[1]"))),
    Case("hf_config_not_json", "search {ws}/hf --task arithmetic --method greedy", 5,
         ("config.json", "not valid JSON"),
         _both(_copy("hf"), _write("hf/config.json", "{oops"))),
    Case("hf_nan_weights", "search {ws}/hf --task arithmetic --method greedy", 5,
         ("model.safetensors", "NaN"), _both(_copy("hf"), _nan_hf)),
    Case("hf_pickle_only", "search {ws}/hf --task arithmetic --method greedy", 5,
         ("pickled",), _both(_copy("hf"), lambda ws, sh: (ws / "hf/model.safetensors").rename(
             ws / "hf/pytorch_model.bin"))),
    Case("orbax_truncated_params", "search {ws}/model --task arithmetic --method greedy", 5,
         ("params", "truncated or corrupt"),
         _both(_copy("model"), _truncate("model/params/**/d/*", 0.3))),
    Case("orbax_config_mismatch", "search {ws}/model --task arithmetic --method greedy", 5,
         ("model_config.json", "shape"),
         _both(_copy("model"), _edit_json("model/model_config.json",
                                          lambda c: {**c, "d_ff": 48}))),
    Case("orbax_config_list", "search {ws}/model --task arithmetic --method greedy", 5,
         ("model_config.json",),
         _both(_copy("model"), _write("model/model_config.json", "[]"))),
    Case("convert_nothing", "convert {ws}/nothing {ws}/out --to orbax", 5, ("nothing",)),
    Case("train_resume_other_model_shape", "train sft --task arithmetic --model tiny-100k "
         "--model-set d_ff=96 --no-progress --run-dir {ws}/sft --steps 4 --batch-size 4 "
         "--seq-len 48", 5, ("shape",),
         _both(_copy("sft"), lambda ws, sh: (ws / "sft/run.json").unlink()), creates=True),
    # ---- run directories and destinations (6) ---------------------------------------
    Case("convert_onto_dir", "convert {shared}/hf {ws}/dst --to orbax", 6,
         ("dst", "--overwrite"), _write("dst/keep.txt", "mine")),
    Case("convert_onto_file", "convert {shared}/hf {ws}/dst --to orbax", 6,
         ("dst", "--overwrite"), _write("dst", "mine")),
    Case("convert_into_source", "convert {ws}/hf {ws}/hf/sub --to orbax --overwrite", 2,
         ("inside",), _copy("hf")),
    Case("search_out_exists", S + " --out {ws}/o.jsonl", 6, ("o.jsonl", "--overwrite"),
         _write("o.jsonl", "old results\n")),
    Case("search_summary_exists", S + " --out {ws}/o.jsonl", 6, ("o.summary.json",),
         _write("o.summary.json", "{}")),
    Case("train_run_dir_is_file", T.replace("{ws}/run", "{ws}/f"), 6, ("f", "is a file"),
         _write("f", "x")),
    Case("train_resume_other_batch", "train sft --task arithmetic --model tiny-100k "
         "--no-progress --run-dir {ws}/sft --steps 4 --batch-size 8 --seq-len 48", 6,
         ("fit.batch_size: 4 -> 8", "new run directory"), _copy("sft")),
    Case("train_resume_other_task", "train sft --task countdown --model tiny-100k "
         "--no-progress --run-dir {ws}/sft --steps 4 --batch-size 4 --seq-len 48", 6,
         ("data.task", "countdown"), _copy("sft")),
    Case("train_resume_changed_data", "train sft --data {ws}/gsm.jsonl --format gsm8k "
         "--model tiny-100k --no-progress --run-dir {ws}/sft --steps 4 --batch-size 4 "
         "--seq-len 48", 6, ("data.fingerprint",),
         _both(_copy("sft"), _copy("gsm.jsonl"), lambda ws, sh: _rewrite_run(ws))),
    Case("train_run_json_corrupt", "train sft --task arithmetic --model tiny-100k "
         "--no-progress --run-dir {ws}/sft --steps 4 --batch-size 4 --seq-len 48", 6,
         ("run.json", "unreadable"), _both(_copy("sft"), _write("sft/run.json", "{torn"))),
    Case("recipe_config_changed", R + " vote_trials=3", 6, ("vote_trials: 16 -> 3",),
         _open_recipe_run()),
    Case("recipe_config_yaml_duplicate_key", R, 6, ("config.yaml", "duplicate key"),
         _both(_open_recipe_run(), lambda ws, sh: (ws / "run/config.yaml").write_text(
             (ws / "run/config.yaml").read_text() + "seed: 3\n"))),
    Case("recipe_config_yaml_garbage", R, 6, ("config.yaml",),
         _both(_open_recipe_run(), _write("run/config.yaml", "task: [unclosed\n"))),
    Case("recipe_run_dir_is_file", R.replace("{ws}/run", "{ws}/f"), 6, ("is a file",),
         _write("f", "x")),
    # ---- the file system (7) --------------------------------------------------------
    Case("search_out_under_file", S + " --out {ws}/f/o.jsonl", 7, ("f", "is a file"),
         _write("f", "x")),
    Case("train_run_dir_under_file", T.replace("{ws}/run", "{ws}/f/run"), 7,
         ("f", "is a file"), _write("f", "x")),
    Case("convert_under_file", "convert {shared}/hf {ws}/f/out --to orbax", 7,
         ("f", "is a file"), _write("f", "x")),
    Case("convert_disk_full", "convert {shared}/model {ws}/out --to hf", 7,
         ("disk is full",), patch=_raise("reasonjax.models.hf.save_file", OSError(
             errno.ENOSPC, "No space left on device", "model.safetensors"))),
    Case("search_disk_full", S + " --out {ws}/o.jsonl", 7, ("o.jsonl", "disk is full"),
         patch=_raise("reasonjax.fileio.os.fsync", OSError(
             errno.ENOSPC, "No space left on device"))),
    Case("orbax_disk_full_message", "convert {shared}/hf {ws}/out --to orbax", 7,
         ("disk is full", "ocdbt"), patch=_raise("reasonjax.checkpoint.save_params", ValueError(
             'RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database at local file "/d/ocdbt/":'
             " Failed to write 9 bytes: No space left on device [os_error_code='28']"))),
    Case("read_only_run_dir", T.replace("{ws}/run", "/proc/reasonjax-run"), 7,
         ("/proc",)),
    # ---- training diverges (8), interrupts (130) ------------------------------------
    Case("non_finite_loss", T + " --steps 3 --batch-size 4 --seq-len 48 "
         "--set fit.optim.lr=1e30 --set fit.optim.clip_norm=null", 8,
         ("non-finite", "step"), creates=True),
    Case("search_interrupted", S + " --out {ws}/o.jsonl", 130, ("interrupted",),
         patch=_raise("reasonjax.driver.run", KeyboardInterrupt())),
    Case("train_interrupted", T + " --steps 2", 130, ("interrupted", "resume"),
         patch=_raise("reasonjax.train.fit.sft_on_task", KeyboardInterrupt()), creates=True),
]


def _rewrite_run(ws: Path):
    """The copied SFT run, re-recorded as a run on ws/gsm.jsonl; then the file changes."""
    assert main(["train", "sft", "--data", str(ws / "gsm.jsonl"), "--format", "gsm8k",
                 "--model", "tiny-100k", "--no-progress", "--run-dir", str(ws / "sft2"),
                 "--steps", "2", "--batch-size", "4", "--seq-len", "48"]) == 0
    shutil.rmtree(ws / "sft")
    (ws / "sft2").rename(ws / "sft")
    (ws / "gsm.jsonl").write_text((ws / "gsm.jsonl").read_text().replace("#### 3", "#### 4"))


def test_the_table_covers_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, shared, tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    if case.setup is not None:
        case.setup(ws, shared)
    before, shared_before = _tree(ws), _tree(shared)
    capsys.readouterr()
    if case.patch is not None:
        case.patch(monkeypatch)
    argv = case.argv.format(ws=ws, shared=shared).split()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, err
    assert "Traceback" not in err
    assert len(lines) <= 2, err
    for needle in case.needles:
        assert needle in err, (needle, err)
    after = _tree(ws)
    for path, digest in before.items():
        assert after.get(path) == digest, f"{path} was changed or removed: {err}"
    if not case.creates:
        assert set(after) == set(before), f"left behind: {sorted(set(after) - set(before))}"
    assert _tree(shared) == shared_before


def test_a_torn_metrics_line_is_dropped_and_the_run_resumes(shared, tmp_path, capsys):
    """A kill mid-append leaves half a line in metrics.jsonl: the rerun warns, naming the
    file and line, drops it and continues (it used to be an unresumable traceback)."""
    shutil.copytree(shared / "sft", tmp_path / "sft")
    with open(tmp_path / "sft" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.')
    assert main(["train", "sft", "--task", "arithmetic", "--model", "tiny-100k",
                 "--no-progress", "--run-dir", str(tmp_path / "sft"), "--steps", "3",
                 "--batch-size", "4", "--seq-len", "48"]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl:3: dropped a torn last line" in err and "Traceback" not in err
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
