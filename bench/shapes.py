"""Model shapes for benchmarks: the real architectures' configs (no weights), random-initialised on the device.

Values from the models' published config.json files (Qwen2.5-1.5B/7B/32B-Instruct).
"""

from __future__ import annotations

from transformers import Qwen2Config

QWEN25 = dict(
    vocab_size=152064,
    rms_norm_eps=1e-6,
    rope_theta=1_000_000.0,
    max_position_embeddings=32768,
    hidden_act="silu",
    tie_word_embeddings=False,
    attention_dropout=0.0,
    use_sliding_window=False,
)

SHAPES = {
    "qwen2.5-32b": dict(
        hidden_size=5120,
        intermediate_size=27648,
        num_hidden_layers=64,
        num_attention_heads=40,
        num_key_value_heads=8,
        **QWEN25,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        **{**QWEN25, "vocab_size": 151936, "tie_word_embeddings": True},
    ),
    "qwen2.5-7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        **QWEN25,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **{**QWEN25, "vocab_size": 49152},
    ),
}


def shape_config(name: str) -> Qwen2Config:
    return Qwen2Config(**SHAPES[name])


def matmul_params(config: Qwen2Config) -> int:
    """N_matmul (DESIGN.md §9): the transformer blocks' matmul weights plus lm_head, not the embedding lookup."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = d // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * ff  # q, k, v, o, gate/up/down
    return layers * per_layer + d * config.vocab_size


def attention_flops_per_token(config: Qwen2Config, mean_context: float) -> float:
    """Causal attention (QK^T and AV, 4*s*d per token per layer forward) for fwd + bwd (3x forward)."""
    return 3 * 4 * config.num_hidden_layers * config.hidden_size * mean_context
