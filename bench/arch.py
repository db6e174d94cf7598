"""Model shapes for the benchmarks: the public `config.json` fields of Qwen2.5 (no weights), and a tiny one for CPUs."""
from __future__ import annotations

_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "attention_dropout": 0.0,
          "initializer_range": 0.02, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
          "use_cache": False, "use_sliding_window": False, "sliding_window": 131072, "bos_token_id": 151643,
          "eos_token_id": 151645, "torch_dtype": "bfloat16"}

ARCHS = {
    # Qwen/Qwen2.5-32B-Instruct: 32.8 B parameters, 61 GiB in bf16
    "qwen2.5-32b": {**_QWEN2, "hidden_size": 5120, "intermediate_size": 27648, "num_hidden_layers": 64,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
                    "max_window_layers": 64, "tie_word_embeddings": False},
    # Qwen/Qwen2.5-7B-Instruct: 7.6 B parameters
    "qwen2.5-7b": {**_QWEN2, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "max_window_layers": 28, "tie_word_embeddings": False},
    # Qwen/Qwen2.5-0.5B-Instruct
    "qwen2.5-0.5b": {**_QWEN2, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_window_layers": 24, "tie_word_embeddings": True},
    # a CPU-sized Qwen2 for checking the benchmark scripts themselves
    "tiny": {**_QWEN2, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 49152, "max_window_layers": 2, "tie_word_embeddings": False},
}


def matmul_params(cfg: dict) -> int:
    """N_matmul of DESIGN.md §9: the blocks' matmul weights plus lm_head (not the embedding lookup)."""
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    head = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * head, cfg["num_key_value_heads"] * head
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i
    return layers * per_layer + h * cfg["vocab_size"]
