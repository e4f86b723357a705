"""A tiny random Llama written as a GGUF file (with a byte-level BPE tokenizer), for tests
of the GGUF conversion and its cache without the real packaged checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, one per byte value."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def write_tiny_gguf(
    path: Path, *, seed: int = 0, layers: int = 2, d_model: int = 32, heads: int = 4
) -> Path:
    """Write a random-weight Llama (``layers`` x ``heads``, GQA with 2 KV heads) to ``path``."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *_byte_alphabet(), "Ġr", "Ġre", "Ġred"]
    head_dim, kv_heads, ffn = d_model // heads, 2, 48
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(d_model)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(["Ġ r", "Ġr e", "Ġre d"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)

    def weight(name: str, *shape: int) -> None:
        writer.add_tensor(name, (0.2 * rng.standard_normal(shape)).astype(np.float32))

    weight("token_embd.weight", len(tokens), d_model)
    for i in range(layers):
        for norm in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{norm}.weight", np.ones(d_model, np.float32))
        weight(f"blk.{i}.attn_q.weight", heads * head_dim, d_model)
        weight(f"blk.{i}.attn_k.weight", kv_heads * head_dim, d_model)
        weight(f"blk.{i}.attn_v.weight", kv_heads * head_dim, d_model)
        weight(f"blk.{i}.attn_output.weight", d_model, heads * head_dim)
        weight(f"blk.{i}.ffn_gate.weight", ffn, d_model)
        weight(f"blk.{i}.ffn_up.weight", ffn, d_model)
        weight(f"blk.{i}.ffn_down.weight", d_model, ffn)
    writer.add_tensor("output_norm.weight", np.ones(d_model, np.float32))
    weight("output.weight", len(tokens), d_model)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
