"""TFDS builders (ArrayRecord files, no TensorFlow) for the built-in tasks and local files.

tensorflow-datasets 4.9 writes and reads ArrayRecord without TensorFlow: a
``GeneratorBasedBuilder`` built with ``file_format="array_record"`` serialises examples
with its own protobuf code, and ``tfds.data_source`` serves random-access splits that grain
reads (``grain.MapDataset.source(...)``). So these are real TFDS datasets::

    build_task_dataset("arithmetic", data_dir, difficulty="hard")
    tfds.data_source("reasonjax_arithmetic/hard", data_dir=data_dir)["train"][0]

Built-in tasks: one builder per task (``reasonjax_arithmetic``, ``reasonjax_countdown``,
``reasonjax_procbench``, ``reasonjax_maze``) with a config per difficulty preset (default
sizes train 10000 / test 1000, seed 0) or a custom :class:`TaskConfig` (knobs, sizes per
split, seed). Problem ``i`` of split ``s`` is ``task.problem(i, seed=f"{seed}/{s}")``;
with ``exclude_overlap`` (default) a non-train split skips problems whose question is in
the train split, so evaluation is on unseen problems.

Local files: ``reasonjax_local`` is a manual-dir builder: put ``<split>.jsonl`` (or
``.json``, ``.parquet``, or a ``<split>/`` directory) in a folder and build with
``build_local_dataset(folder, data_dir, format="gsm8k")``; bad records are skipped and
counted (``on_error="skip"``) or fatal, as in :mod:`.local`.

Every example stores a :class:`Problem`: ``task``, ``question``, ``steps``, ``answer`` as
text and ``instance`` / ``meta`` as JSON text; :func:`reasonjax.data.task.decode_problem`
turns a record back into a Problem.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import tensorflow_datasets as tfds

from reasonjax.data.local import SUFFIXES, LocalDataError, load_local
from reasonjax.data.task import Problem, TaskError, get_task

VERSION = "1.0.0"
DEFAULT_SIZES = {"train": 10_000, "test": 1_000}
_OVERLAP_TRIES = 50


def _features() -> tfds.features.FeaturesDict:
    text = tfds.features.Text()
    return tfds.features.FeaturesDict({
        "task": text, "question": text, "steps": tfds.features.Sequence(text),
        "answer": text, "instance": text, "meta": text})


def _record(p: Problem) -> dict:
    return {"task": p.task, "question": p.question, "steps": list(p.steps), "answer": p.answer,
            "instance": json.dumps(p.instance, sort_keys=True),
            "meta": json.dumps(p.meta, sort_keys=True)}


@dataclasses.dataclass
class TaskConfig(tfds.core.BuilderConfig):
    """knobs: task knobs; sizes: examples per split; seed: generation seed;
    exclude_overlap: non-train splits skip questions that are in train."""

    knobs: dict = dataclasses.field(default_factory=dict)
    sizes: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_SIZES))
    seed: int = 0
    exclude_overlap: bool = True


def _preset_configs(task: str) -> list[TaskConfig]:
    """One config per difficulty preset of ``task``."""
    return [TaskConfig(name=name, description=f"{task} {name}: {knobs}", knobs=dict(knobs))
            for name, knobs in get_task(task).DIFFICULTIES.items()]


class _TaskBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Generates a built-in task's problems (subclasses set TASK)."""

    TASK = ""
    VERSION = tfds.core.Version(VERSION)
    DEFAULT_CONFIG_NAME = "medium"

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=f"reasonjax task {self.TASK!r} (procedurally generated, "
                                      "exact answers and step checks)",
            features=_features(),
            metadata=tfds.core.MetadataDict(task=self.TASK, knobs=cfg.knobs, sizes=cfg.sizes,
                                            seed=cfg.seed))

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        task = get_task(self.TASK, **cfg.knobs)
        if "train" in cfg.sizes and cfg.exclude_overlap:
            seen = {p.question for p in task.generate(cfg.sizes["train"], f"{cfg.seed}/train")}
        else:
            seen = set()
        return {split: self._generate_examples(task, split, n,
                                               set() if split == "train" else seen)
                for split, n in cfg.sizes.items()}

    def _generate_examples(self, task, split: str, n: int, exclude: set):
        seed = f"{self.builder_config.seed}/{split}"
        index = kept = 0
        while kept < n:
            if index >= _OVERLAP_TRIES * n:
                raise TaskError(
                    f"{self.name}/{self.builder_config.name}: only {kept} of {n} {split} "
                    f"problems are not in train after {index} draws; the task's problem "
                    "space is too small: use harder knobs, fewer examples, or "
                    "exclude_overlap=False")
            p = task.problem(index, seed)
            index += 1
            if p.question in exclude:
                continue
            yield kept, _record(p)
            kept += 1


class ReasonjaxArithmetic(_TaskBuilder):
    TASK = "arithmetic"
    BUILDER_CONFIGS = _preset_configs("arithmetic")


class ReasonjaxCountdown(_TaskBuilder):
    TASK = "countdown"
    BUILDER_CONFIGS = _preset_configs("countdown")


class ReasonjaxProcbench(_TaskBuilder):
    TASK = "procbench"
    BUILDER_CONFIGS = _preset_configs("procbench")


class ReasonjaxMaze(_TaskBuilder):
    TASK = "maze"
    BUILDER_CONFIGS = _preset_configs("maze")


class ReasonjaxGym(_TaskBuilder):
    """A reasoning-gym dataset (``gym:<dataset>``): one config per dataset and generator
    config, named by :func:`build_task_dataset`."""

    TASK = "gym"
    BUILDER_CONFIGS = [TaskConfig(name="chain_sum", description="gym:chain_sum",
                                  knobs={"dataset": "chain_sum"})]
    DEFAULT_CONFIG_NAME = "chain_sum"


BUILDERS = {b.TASK: b for b in (ReasonjaxArithmetic, ReasonjaxCountdown, ReasonjaxProcbench,
                                ReasonjaxMaze, ReasonjaxGym)}


@dataclasses.dataclass
class LocalConfig(tfds.core.BuilderConfig):
    """format: gsm8k / math / mc; on_error: skip / fail; fields: field-name overrides."""

    format: str = "gsm8k"
    on_error: str = "skip"
    fields: dict = dataclasses.field(default_factory=dict)


class ReasonjaxLocal(tfds.core.GeneratorBasedBuilder):
    """Local GSM8K / MATH / multiple-choice files from a manual directory."""

    VERSION = tfds.core.Version(VERSION)
    BUILDER_CONFIGS = [LocalConfig(name=f, format=f) for f in ("gsm8k", "math", "mc")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put one file per split in the manual directory, named <split>.jsonl (or .json, "
        ".parquet, or a <split>/ directory of such files), e.g. train.jsonl and test.jsonl, "
        "and pass it as download_config=tfds.download.DownloadConfig(manual_dir=...).")

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, description=f"local {cfg.format} files", features=_features(),
            metadata=tfds.core.MetadataDict(format=cfg.format, on_error=cfg.on_error))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(path)
                for split, path in local_splits(Path(dl_manager.manual_dir)).items()}

    def _generate_examples(self, path: Path):
        cfg = self.builder_config
        report = load_local(path, cfg.format, cfg.on_error, cfg.fields)
        for i, p in enumerate(report.problems):
            yield i, _record(p)


def local_splits(folder: Path) -> dict[str, Path]:
    """split name -> file or directory in a manual folder."""
    if not folder.is_dir():
        raise LocalDataError(f"{folder}: manual directory does not exist")
    splits: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if (p.is_file() and p.suffix in SUFFIXES) or p.is_dir():
            if p.stem in splits:
                raise LocalDataError(f"{folder}: two inputs for split {p.stem!r}: "
                                     f"{splits[p.stem].name} and {p.name}")
            splits[p.stem] = p
    if not splits:
        raise LocalDataError(f"{folder}: no <split>{'|'.join(SUFFIXES)} files; "
                             + ReasonjaxLocal.MANUAL_DOWNLOAD_INSTRUCTIONS)
    return splits


# ---------------------------------------------------------------------------------------
# Convenience


def build_task_dataset(task: str, data_dir: str | Path, difficulty: Optional[str] = None,
                       name: Optional[str] = None, sizes: Optional[dict[str, int]] = None,
                       seed: int = 0, exclude_overlap: bool = True,
                       **knobs: Any) -> str:
    """Writes a built-in task as a TFDS dataset; returns its ``tfds.data_source`` name.

    Without knobs, sizes or seed the preset config ``difficulty`` (default medium) is
    built. Anything custom needs ``name``, a config name of your choosing, so a name
    always identifies the same contents. ``gym:<dataset>`` builds a reasoning-gym
    dataset (config name: the dataset's, or ``name`` when customised; ``knobs``: its
    generator config).
    """
    family, _, member = task.partition(":")
    if member and family == ReasonjaxGym.TASK:
        get_task(task, **knobs)  # validates the dataset and its config first
        gym_knobs = {"dataset": member, "config": dict(knobs.pop("config", {}), **knobs)}
        custom = bool(gym_knobs["config"]) or sizes is not None or seed != 0 \
            or not exclude_overlap
        if custom and name is None:
            raise TaskError(f"custom knobs, sizes or seed need a config name: pass "
                            f"name='my_{member}'")
        config = TaskConfig(name=name or member, description=f"{task} {gym_knobs['config']}",
                            knobs=gym_knobs, sizes=dict(sizes or DEFAULT_SIZES), seed=seed,
                            exclude_overlap=exclude_overlap)
        builder = ReasonjaxGym(config=config, data_dir=str(data_dir),
                               file_format="array_record")
        builder.download_and_prepare()
        return f"{builder.name}/{builder.builder_config.name}"
    if task not in BUILDERS:
        raise TaskError(f"no TFDS builder for task {task!r}; built-in tasks: {sorted(BUILDERS)}")
    cls = BUILDERS[task]
    presets = {c.name: c for c in cls.BUILDER_CONFIGS}
    difficulty = difficulty or cls.DEFAULT_CONFIG_NAME
    if difficulty not in presets:
        raise TaskError(f"task {task!r} has no difficulty {difficulty!r}; presets: "
                        f"{sorted(presets)}")
    custom = bool(knobs) or sizes is not None or seed != 0 or not exclude_overlap
    if custom and (name is None or name in presets):
        raise TaskError(f"custom knobs, sizes or seed need a config name that is not a preset "
                        f"({sorted(presets)}): pass name='my_{task}'")
    if name is None:
        config: Any = difficulty
    else:
        merged = {**presets[difficulty].knobs, **knobs}
        get_task(task, **merged)  # validates knobs before anything is written
        config = TaskConfig(name=name, description=f"{task} {merged}", knobs=merged,
                            sizes=dict(sizes or DEFAULT_SIZES), seed=seed,
                            exclude_overlap=exclude_overlap)
    builder = cls(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return f"{builder.name}/{builder.builder_config.name}"


def build_local_dataset(manual_dir: str | Path, data_dir: str | Path, format: str,
                        name: Optional[str] = None, on_error: str = "skip",
                        fields: Optional[dict[str, str]] = None) -> str:
    """Writes local files (``<split>.jsonl`` ... in ``manual_dir``) as a TFDS dataset;
    returns its ``tfds.data_source`` name (``reasonjax_local/<name or format>``)."""
    local_splits(Path(manual_dir))
    presets = {c.name for c in ReasonjaxLocal.BUILDER_CONFIGS}
    if format not in presets:
        raise LocalDataError(f"format must be one of {sorted(presets)}, got {format!r}")
    config: Any = format
    if on_error != "skip" or fields or name not in (None, format):
        if name is None or name in presets:
            raise LocalDataError(f"on_error / fields other than the defaults need a config "
                                 f"name that is not one of {sorted(presets)}: pass name=...")
        config = LocalConfig(name=name, format=format, on_error=on_error,
                             fields=dict(fields or {}))
    builder = ReasonjaxLocal(config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return f"{builder.name}/{builder.builder_config.name}"
