"""The one model definition, its configs/presets, HF import/export and tokenizers."""

from reasonjax.models.config import PRESETS, ModelConfig, RopeScaling, get_config
from reasonjax.models.hf import CheckpointError, from_pretrained, save_pretrained
from reasonjax.models.tokenizer import (CharTokenizer, HFTokenizer, SentencePieceTokenizer,
                                        Tokenizer, TokenizerError, apply_chat_template,
                                        check_vocab, delimiter_automaton, load_tokenizer,
                                        train_sentencepiece)
from reasonjax.models.transformer import (KVCache, ModelOutput, Transformer, grow_cache,
                                          init_cache, init_params, take_rows)

__all__ = [
    "PRESETS", "ModelConfig", "RopeScaling", "get_config", "CheckpointError",
    "from_pretrained", "save_pretrained", "CharTokenizer", "HFTokenizer",
    "SentencePieceTokenizer", "Tokenizer", "TokenizerError", "apply_chat_template",
    "check_vocab", "delimiter_automaton", "load_tokenizer", "train_sentencepiece", "KVCache",
    "ModelOutput", "Transformer", "grow_cache", "init_cache", "init_params", "take_rows",
]
