"""Write docs/architectures.md: which decoder families of the installed transformers give
exact per-head contributions, and why the others are refused.

Runs the conformance check of ``tests/conformance.py`` (tiny random models, an oracle
independent of the library) on every causal-LM and image-text-to-text model type::

    python scripts/architecture_table.py            # writes docs/architectures.md
    python scripts/architecture_table.py --refused  # prints the REFUSED table of the tests

Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conformance import MODEL_TYPES, format_table, run  # noqa: E402

HEADER = """# Architectures

headpursuit finds the attention heads of a model by structure and proves, on one probe
forward pass when `AttentionSites` is built, that its per-head contributions are exactly
what the residual stream receives. This page is the result of that check on every decoder
model type of the installed transformers, and how it works.

## How a model is read

1. **Language backbone.** `model.get_decoder()` (for a vision-language model, its language
   model), and the config's text part (`config.get_text_config()`). The decoder layers are
   the `nn.ModuleList` of `num_hidden_layers` modules holding attention modules (classes
   named `...Attention` / `...Attn` / `...MLA`; lists under a vision or audio tower come
   last). Linear-attention mixers named that way (Kimi's and Bailing's delta rule,
   MiniMax's lightning attention: `Delta`, `Linear`, `Lightning`, `Retention`, `Mamba` in
   the class name after the model's own name) are not softmax heads and are left out, like
   Mamba and Gated-DeltaNet mixers.
2. **Output projection.** In every attention module of a layer, the `nn.Linear` or GPT-2
   `Conv1D` writing `d_model` features that runs *last* on the probe is the output
   projection; its input is `z`, the concatenated head outputs. A table entry
   (`register_architecture`) can name it instead; it is verified all the same.
3. **Probe.** One forward pass of the backbone on 2 x 12 random token ids. Every other
   parametric sub-block of each layer (MLP, MoE, Mamba or linear-attention mixer) runs
   with all-zero parameters, so it adds nothing (and still passes on a residual it is
   handed, as BLOOM's MLP does); each token's `z` is multiplied by a random factor in
   [0.5, 2] on its way into the projection.
4. **Verification.** Per layer, the layer's output must equal `a * x + c * G(z W_O^T + b)`
   for every probe token, where `x` is the layer's input, `G` the identity or one of the
   layer's RMS norms (`gamma * y / rms(y)`: a post-attention norm, found by behaviour, never
   by name), `c` the factor the attention output reaches the stream with (Granite's
   `residual_multiplier`, Mllama's gates, Falcon-H1's multipliers, Doge's per-channel
   weights), and `a` the factor the stream itself is carried with (1 nearly always).
   `a` and `c` are fitted by least squares, as one number or one per channel; the random
   factors on `z` make a norm after the projection impossible to mistake for a plain
   linear map. The worst token's relative error must be within 1e-4 (float32 models;
   1e-6 for float64, 3e-2 for bfloat16/float16, where the residual add itself rounds).
   Fitted factors within a quarter of that of 1 are exactly 1. A fit that multiplies the
   attention or the stream by 0 proves nothing and does not count. If a silenced sub-block
   was handed the attention output itself (not the stream), the layer is refused: that
   module would act on the heads' outputs before the residual add.
5. **Heads.** The head count comes from the attention module (`num_heads`...) or the
   config; the per-head width from `v_head_dim` first (multi-head latent attention:
   DeepSeek-V2/V3, MiniCPM3, GLM-4-MoE-Lite), then `head_dim`, then `z`'s width / heads.
   `ArchitectureSpec(head_dim=...)` overrides it. Layers may differ in head size (padded,
   below); a model whose attention layers differ in head *count* is refused, because
   rankings, random control heads and activation files assume one head count.

The contribution of head `h` of attention layer `l` is `c * gamma * W_O[:, h] z_h * s_t`, with
`s_t` the post-norm's per-token scale (1 without one) frozen at its value on the whole
`z`; `sites.head_matrices(l)` folds `c` and `gamma` in. The projection's bias belongs to no
head. The cost at load is one forward pass of the backbone on 24 tokens, plus each MLP
once more with zero weights: about two forward passes. Measured on one thread of a busy
2-core machine: SmolLM2-135M 1.7 s (float32) / 1.2 s (bfloat16), Gemma-3-270M 1.1 s /
0.8 s, Qwen2.5-Coder-0.5B 4.2 s / 1.7 s, where a plain 24-token forward pass of the
Qwen backbone took 1.6 s. The largest probe error on these real models is 3e-7 in
float32 and 1e-2 in bfloat16.

**Layer indices.** `Head(layer, head)` indexes the model's *attention layers* in order. For
a hybrid whose layers are not all attention (Jamba, Bamba, GraniteMoeHybrid, Qwen3-Next,
Nemotron-H, LFM2...), `sites.attention_layers[i]` (or `sites.layers[i].decoder_layer`) is
the decoder layer of attention layer `i`, and `sites.n_decoder_layers` counts all layers;
for every other model (Falcon-H1 included: its Mamba mixer runs beside the attention in
every layer) the two indices are the same. Layers whose head count or
head size differs (Gemma 4's full-attention layers) sit on one padded grid of
`sites.n_heads x sites.head_dim`; the padding is zero in `head_matrices` and in captured
activations.

**Refused, by design.** Post-LayerNorm blocks (BERT-style, BART, OPT-350m-style,
GPT-1): the norm acts on the sum of stream and attention, so no per-head split of the
update exists. A module applied to the attention output before the residual add that is
not a norm (Inkling's short convolution). Attention modules run several times per pass
(weight-shared layers). Streams that are not one vector per token (DeepSeek-V4 and
Hunyuan-V4 hyper-connections). Encoder-decoder decoders, which need encoder states for a
text-only probe. Every refusal raises `UnsupportedArchitectureError`, whose message names
the module, what was checked, the measured error and the
`register_architecture(model_type, ArchitectureSpec(...))` override.

## Conformance of the installed transformers

Each row: a 2-layer, width-64 random model of the type (weights, norm gains, biases and
the config's scalar multipliers all randomised; float64), checked against an oracle that
uses nothing the library decided except where `z` enters the projection: what the decoder
layer adds to its input with its other sub-blocks zeroed, token by token; each head alone
(the others zeroed at the projection input) against its contribution, at the frozen
post-norm scale read off the layer's own outputs; and the head count against the
attention weights. "unbuildable" rows are types whose default config this test could not
shrink into a working tiny model; they say nothing about headpursuit.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architectures.md")
    parser.add_argument("--refused", action="store_true", help="print the tests' REFUSED table")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for model_type in MODEL_TYPES:
        row = run(model_type)
        rows.append(row)
        print(f"{row.model_type:28s} {row.status:11s} {row.detail}", flush=True)
    seconds = time.perf_counter() - start
    if args.refused:
        print("REFUSED: dict[str, str] = {")
        for row in rows:
            if row.status == "refused":
                print(f"    {row.model_type!r}: {row.detail.split(' (')[0]!r},")
        print("}")
        return
    environment = (
        f"transformers {transformers.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}; {seconds:.0f} s on one CPU thread."
    )
    text = (
        HEADER
        + f"\nGenerated by `python scripts/architecture_table.py` with {environment}\n\n"
        + format_table(rows)
        + "\n"
    )
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
