"""`reasonjax data`: tasks, preview, build-tfds, validate."""

import json

import tensorflow_datasets as tfds

from reasonjax.cli import main


def test_tasks_and_preview(capsys):
    assert main(["data", "list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "arithmetic" in out and "game24" in out and "final answer only" in out
    assert main(["data", "preview", "--task", "arithmetic", "--n", "3", "n_ops=4"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- 4 steps") == 3 and "FAIL" not in out and "answer: " in out


def test_preview_bad_knob_is_a_clear_error(capsys):
    assert main(["data", "preview", "--task", "maze", "depth=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'depth'" in err and "height" in err


def test_build_tfds_task_and_local(tmp_path, capsys):
    data_dir = str(tmp_path / "tfds")
    assert main(["data", "build-tfds", "--task", "procbench", "--data-dir", data_dir,
                 "--name", "cli", "--train", "6", "--test", "2", "n_steps=3"]) == 0
    assert "reasonjax_procbench/cli" in capsys.readouterr().out
    ds = tfds.data_source("reasonjax_procbench/cli", data_dir=data_dir, download=False)
    assert len(ds["train"]) == 6 and len(ds["train"][0]["steps"]) == 3
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train.jsonl").write_text(json.dumps(
        {"question": "2+2?", "choices": ["3", "4"], "answerKey": "B"}) + "\n")
    assert main(["data", "build-tfds", "--local", str(manual), "--format", "mc",
                 "--data-dir", data_dir]) == 0
    assert len(tfds.data_source("reasonjax_local/mc", data_dir=data_dir)["train"]) == 1
    assert main(["data", "build-tfds", "--data-dir", data_dir]) == 2  # neither --task nor --local


def test_validate(tmp_path, capsys):
    path = tmp_path / "math.jsonl"
    path.write_bytes(b'{"problem": "1+1", "solution": "$\\\\boxed{2}$"}\n'
                     b'{"problem": "no answer", "solution": "none"}\n'
                     b'\xff\xfe\n')
    assert main(["data", "validate", str(path), "--format", "math"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}:2: ") and "boxed" in out[0]
    assert out[1].startswith(f"{path}:3: not valid UTF-8")
    assert json.loads(out[-1]) == {"records": 3, "usable": 1, "skipped": 2, "mean_steps": 1.0}
    assert main(["data", "validate", str(path), "--format", "math", "--on-error", "fail"]) == 4
    assert f"{path}:2" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "q", "answer": "#### 3"}\n')
    assert main(["data", "validate", str(good), "--format", "gsm8k"]) == 0
