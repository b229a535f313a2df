"""Tokenizers behind one small protocol, chat templates, and step-delimiter detection.

Three implementations:
- :class:`CharTokenizer`: one id per character, for the built-in tasks (saved as
  ``char_tokenizer.json``).
- :class:`SentencePieceTokenizer`: a SentencePiece ``.model`` file (Llama-2/Mistral style).
- :class:`HFTokenizer`: a HF ``tokenizer.json`` (Llama-3, Qwen2), via the ``tokenizers``
  library, with special tokens and chat template from ``tokenizer_config.json``.

``load_tokenizer(path)`` picks the right one for a file or checkpoint directory.

Step delimiters: with BPE/SentencePiece vocabularies a delimiter such as ``"\\n\\n"`` can be
part of a larger token (``".\\n\\n"``) or be split across tokens (``"\\n"``, ``"\\n"``).
:func:`delimiter_automaton` precomputes, for every (partial-match state, token id), the
next state and whether the delimiter completed, so jit-compiled samplers detect step ends
exactly with one table lookup per token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from reasonjax.errors import CheckpointError
from reasonjax.fileio import read_json


class TokenizerError(CheckpointError):
    """Tokenizer files or usage are wrong; the message names the file or field."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of reasonjax needs from a tokenizer."""

    vocab_size: int          # number of ids the tokenizer can emit
    pad_id: int
    bos_id: Optional[int]
    eos_id: int
    chat_template: Optional[str]

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...

    def token_texts(self) -> list[str]:
        """Surface text of every id (special tokens give '')."""
        ...

    def special_tokens(self) -> dict[str, int]:
        """Name -> id of the special tokens (bos, eos, pad, ...)."""
        ...


def encode_batch(tok: Tokenizer, texts: Iterable[str], add_bos: bool = False,
                 add_eos: bool = False) -> list[list[int]]:
    return [tok.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]


def decode_batch(tok: Tokenizer, ids: Iterable[Sequence[int]],
                 skip_special: bool = True) -> list[str]:
    return [tok.decode(list(x), skip_special=skip_special) for x in ids]


def pad_batch(seqs: Sequence[Sequence[int]], length: int, pad_id: int,
              side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Pads id lists to ``length``. Returns tokens [B, length] int32 and mask [B, length]."""
    tokens = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        if len(s) > length:
            raise TokenizerError(f"sequence {i} has {len(s)} tokens, more than length {length}")
        if side == "right":
            tokens[i, :len(s)] = s
            mask[i, :len(s)] = 1
        elif side == "left":
            tokens[i, length - len(s):] = s
            mask[i, length - len(s):] = 1
        else:
            raise TokenizerError(f"side must be 'left' or 'right', got {side!r}")
    return tokens, mask


def check_vocab(model_vocab_size: int, tok: Tokenizer, where: str = "model") -> None:
    """The model must have an embedding row for every id the tokenizer emits."""
    if tok.vocab_size > model_vocab_size:
        raise TokenizerError(
            f"{where} vocab_size {model_vocab_size} is smaller than the tokenizer's "
            f"{tok.vocab_size} ids; set the model's vocab_size to at least {tok.vocab_size} "
            "(or use the tokenizer the checkpoint was trained with)")


# ---------------------------------------------------------------------------------------
# Character tokenizer

_CHAR_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
DEFAULT_ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))


class CharTokenizer:
    """One id per character: ids 0..3 are <pad>, <bos>, <eos>, <unk>; then the alphabet.

    Characters outside the alphabet raise (or map to <unk> with ``unknown='unk'``), so
    data is never silently altered.
    """

    def __init__(self, alphabet: str = DEFAULT_ALPHABET, unknown: str = "error"):
        if len(set(alphabet)) != len(alphabet):
            raise TokenizerError("CharTokenizer alphabet has repeated characters")
        if unknown not in ("error", "unk"):
            raise TokenizerError(f"unknown must be 'error' or 'unk', got {unknown!r}")
        self.alphabet = alphabet
        self.unknown = unknown
        self._id = {c: i + len(_CHAR_SPECIALS) for i, c in enumerate(alphabet)}
        self.vocab_size = len(_CHAR_SPECIALS) + len(alphabet)
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
        self.chat_template = None

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = [self.bos_id] if add_bos else []
        for pos, ch in enumerate(text):
            i = self._id.get(ch)
            if i is None:
                if self.unknown == "error":
                    raise TokenizerError(
                        f"character {ch!r} at offset {pos} is not in the CharTokenizer "
                        "alphabet; extend the alphabet or pass unknown='unk'")
                i = self.unk_id
            ids.append(i)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i < len(_CHAR_SPECIALS):
                if not skip_special:
                    out.append(_CHAR_SPECIALS[i])
            elif i < self.vocab_size:
                out.append(self.alphabet[i - len(_CHAR_SPECIALS)])
            elif not skip_special:
                out.append("<unk>")
        return "".join(out)

    def token_texts(self) -> list[str]:
        return [""] * len(_CHAR_SPECIALS) + list(self.alphabet)

    def special_tokens(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(_CHAR_SPECIALS)}

    def save(self, path: str | Path) -> Path:
        """Writes ``char_tokenizer.json`` into directory ``path`` (or to file ``path``)."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "char_tokenizer.json"
        from reasonjax.fileio import atomic_write_text

        return atomic_write_text(path, json.dumps({"type": "char", "alphabet": self.alphabet,
                                                   "unknown": self.unknown}))

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        data = read_json(path, TokenizerError)
        if data.get("type") != "char" or "alphabet" not in data:
            raise TokenizerError(f"{path}: not a char tokenizer file (needs type=char, alphabet)")
        return cls(data["alphabet"], data.get("unknown", "error"))


# ---------------------------------------------------------------------------------------
# SentencePiece


class SentencePieceTokenizer:
    """A SentencePiece ``.model`` file."""

    def __init__(self, model_file: str | Path, chat_template: Optional[str] = None):
        import sentencepiece as spm

        self.path = Path(model_file)
        if not self.path.is_file():
            raise TokenizerError(f"SentencePiece model {self.path} does not exist")
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        if self.sp.eos_id() < 0:
            raise TokenizerError(f"{self.path}: the SentencePiece model defines no eos id")
        self.eos_id = self.sp.eos_id()
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id
        self.chat_template = chat_template

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = list(self.sp.encode(text))
        if add_bos:
            if self.bos_id is None:
                raise TokenizerError(f"{self.path}: the SentencePiece model defines no bos id")
            ids = [self.bos_id] + ids
        return ids + [self.eos_id] if add_eos else ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special:
            ids = [i for i in ids if not self.sp.is_control(i)]
        return self.sp.decode(ids)

    def token_texts(self) -> list[str]:
        out = []
        for i in range(self.vocab_size):
            if self.sp.is_control(i) or self.sp.is_unknown(i):
                out.append("")
            elif self.sp.is_byte(i):
                out.append(chr(int(self.sp.id_to_piece(i)[3:5], 16)))
            else:
                out.append(self.sp.id_to_piece(i).replace("\u2581", " "))
        return out

    def special_tokens(self) -> dict[str, int]:
        out = {"eos": self.eos_id, "pad": self.pad_id}
        if self.bos_id is not None:
            out["bos"] = self.bos_id
        return out


def train_sentencepiece(texts: Iterable[str], model_prefix: str | Path, vocab_size: int,
                        model_type: str = "bpe",
                        user_symbols: Sequence[str] = ()) -> SentencePieceTokenizer:
    """Trains a SentencePiece model on local text; writes ``<model_prefix>.model``.

    Whitespace and newlines are kept exactly (identity normalisation, byte fallback), so
    step delimiters such as ``"\\n"`` survive a round trip. ids: pad 0, bos 1, eos 2, unk 3.
    """
    import sentencepiece as spm

    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    sentences = [t for t in texts if t]
    if not sentences:
        raise TokenizerError("train_sentencepiece: no non-empty texts to train on")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_prefix=str(prefix),
            vocab_size=vocab_size, model_type=model_type, normalization_rule_name="identity",
            remove_extra_whitespaces=False, split_by_whitespace=True, byte_fallback=True,
            allow_whitespace_only_pieces=True, user_defined_symbols=list(user_symbols),
            pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False,
            max_sentence_length=1 << 16, minloglevel=2)
    except RuntimeError as e:
        raise TokenizerError(
            f"train_sentencepiece(vocab_size={vocab_size}): {e}. Byte fallback needs 256 "
            "byte pieces plus the text's characters, so vocab_size must exceed that") from None
    return SentencePieceTokenizer(f"{prefix}.model")


# ---------------------------------------------------------------------------------------
# HF tokenizer.json


def _token_content(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("content")
    return str(value)


class HFTokenizer:
    """A HF ``tokenizer.json`` with ``tokenizer_config.json`` beside it (optional)."""

    def __init__(self, tokenizer_file: str | Path):
        from tokenizers import Tokenizer as RustTokenizer

        self.path = Path(tokenizer_file)
        if not self.path.is_file():
            raise TokenizerError(f"tokenizer file {self.path} does not exist")
        try:
            self.tk = RustTokenizer.from_file(str(self.path))
        except Exception as e:  # the Rust error says what is wrong with the JSON
            raise TokenizerError(f"{self.path}: cannot read tokenizer: {e}") from None
        self.vocab_size = self.tk.get_vocab_size(with_added_tokens=True)
        cfg_file = self.path.parent / "tokenizer_config.json"
        cfg = read_json(cfg_file, TokenizerError) if cfg_file.is_file() else {}
        self.config = cfg
        template = cfg.get("chat_template")
        jinja_file = self.path.parent / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text()
        if isinstance(template, list):  # named templates: take "default"
            template = next((t["template"] for t in template if t.get("name") == "default"),
                            None)
        self.chat_template = template
        self.bos_token = _token_content(cfg.get("bos_token"))
        self.eos_token = _token_content(cfg.get("eos_token"))
        self.pad_token = _token_content(cfg.get("pad_token"))
        self.bos_id = self._id(self.bos_token)
        eos_id = self._id(self.eos_token)
        if eos_id is None:
            eos_id = self._guess_eos()
        if eos_id is None:
            raise TokenizerError(
                f"{cfg_file}: no eos_token found; set eos_token in tokenizer_config.json")
        self.eos_id = eos_id
        pad_id = self._id(self.pad_token)
        self.pad_id = pad_id if pad_id is not None else self.eos_id
        self._special = {t.content for t in self.tk.get_added_tokens_decoder().values()
                         if t.special}

    def _id(self, token: Optional[str]) -> Optional[int]:
        return None if token is None else self.tk.token_to_id(token)

    def _guess_eos(self) -> Optional[int]:
        for t in ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"):
            if self.tk.token_to_id(t) is not None:
                return self.tk.token_to_id(t)
        return None

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self.tk.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self.bos_id is None:
                raise TokenizerError(f"{self.path}: this tokenizer has no bos token")
            ids = [self.bos_id] + ids
        return ids + [self.eos_id] if add_eos else ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_texts(self) -> list[str]:
        texts = self.tk.decode_batch([[i] for i in range(self.vocab_size)],
                                     skip_special_tokens=False)
        return ["" if self.tk.id_to_token(i) in self._special else t
                for i, t in enumerate(texts)]

    def special_tokens(self) -> dict[str, int]:
        out = {t: self.tk.token_to_id(t) for t in sorted(self._special)}
        out.update(eos=self.eos_id, pad=self.pad_id)
        if self.bos_id is not None:
            out["bos"] = self.bos_id
        return out


# ---------------------------------------------------------------------------------------
# Loading


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a file (``.model``, ``tokenizer.json``, ``char_tokenizer.json``) or
    from a checkpoint directory holding one of them."""
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "tokenizer.model", "char_tokenizer.json"):
            if (path / name).is_file():
                return load_tokenizer(path / name)
        raise TokenizerError(f"{path} holds no tokenizer.json, tokenizer.model or "
                             "char_tokenizer.json")
    if not path.is_file():
        raise TokenizerError(f"tokenizer {path} does not exist")
    if path.suffix == ".model":
        cfg = path.parent / "tokenizer_config.json"
        template = read_json(cfg, TokenizerError).get("chat_template") if cfg.is_file() \
            else None
        return SentencePieceTokenizer(path, chat_template=template)
    if path.name == "char_tokenizer.json":
        return CharTokenizer.load(path)
    if path.suffix == ".json":
        return HFTokenizer(path)
    raise TokenizerError(f"{path}: unknown tokenizer format (expected .model or .json)")


# ---------------------------------------------------------------------------------------
# Chat templates


def apply_chat_template(tok: Tokenizer, messages: Sequence[dict],
                        add_generation_prompt: bool = True, **extra) -> str:
    """Renders ``messages`` ([{"role", "content"}]) with the checkpoint's Jinja template.

    The template runs in Jinja's immutable sandbox: it can format text, not run code.
    """
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not tok.chat_template:
        raise TokenizerError("this tokenizer has no chat template (tokenizer_config.json "
                             "'chat_template'); format prompts yourself or add one")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise TokenizerError(f"messages[{i}] must be a dict with 'role' and 'content'")

    def raise_exception(msg):
        raise TokenizerError(f"chat template: {msg}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, indent=indent,
                                                                   ensure_ascii=False)
    specials = {}
    for attr in ("bos_token", "eos_token", "pad_token"):
        specials[attr] = getattr(tok, attr, None) or ""
    try:
        return env.from_string(tok.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            **specials, **extra)
    except TemplateError as e:
        raise TokenizerError(f"chat template failed to render: {e}") from None


# ---------------------------------------------------------------------------------------
# Step delimiters


@dataclass(frozen=True)
class DelimiterAutomaton:
    """Exact detection of a delimiter string in a token stream.

    next_state: [D, V] int32, the partial-match length after emitting token v in state s
      (D = len(delimiter); state 0 = nothing matched).
    completes:  [D, V] bool, whether emitting v in state s completes the delimiter (a step
      ends there; the next step starts in state 0).
    """

    delimiter: str
    next_state: np.ndarray
    completes: np.ndarray


def _kmp_table(pattern: str) -> list[int]:
    fail = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fail[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fail[i] = k
    return fail


def delimiter_automaton(tok: Tokenizer, delimiter: str) -> DelimiterAutomaton:
    """Precomputes step-end detection for ``delimiter`` over the whole vocabulary."""
    if not delimiter:
        raise TokenizerError("step delimiter must be a non-empty string")
    fail = _kmp_table(delimiter)
    D = len(delimiter)
    texts = tok.token_texts()
    V = len(texts)
    next_state = np.zeros((D, V), np.int32)
    completes = np.zeros((D, V), bool)
    # Tokens without text (special tokens) leave the match state as it is; tokens whose
    # text has no delimiter character send every state to 0 (the default).
    chars = set(delimiter)
    for v, text in enumerate(texts):
        if not text:
            next_state[:, v] = np.arange(D)
            continue
        if not chars.intersection(text):
            continue
        for s in range(D):
            k = s
            for ch in text:
                while k and ch != delimiter[k]:
                    k = fail[k - 1]
                if ch == delimiter[k]:
                    k += 1
                if k == D:
                    completes[s, v] = True
                    k = 0
                    break
            next_state[s, v] = k
    return DelimiterAutomaton(delimiter, next_state, completes)

