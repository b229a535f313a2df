"""Tiny model config and tokenizer shared by the search tests."""

from reasonjax.models import CharTokenizer, ModelConfig

TOK = CharTokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                  d_ff=64, max_seq_len=96)
