"""Train the tiny VLM's vision tower + projector against the frozen SmolLM2-135M-Instruct.

One command, CPU only (about 40 minutes on 2 shared cores; never run in CI)::

    nice -n 10 .venv/bin/python scripts/train_tiny_vlm.py

Two stages, both training only the vision tower and the projector (the language model is
frozen, as in LLaVA stage 1):

A. alignment (cheap, no language-model pass): the mean of the 16 projected image tokens is
   pushed towards the unembedding rows of the answer's tokens (cosine softmax over all
   answer tokens of the three tasks); for two-shape scenes the left/right halves of the
   token grid are pushed towards the left/right object's words. A penalty keeps the token
   norms at the median norm of SmolLM2's embedding rows.
B. language modelling: next-token cross-entropy on the answer tokens only (answer + the
   ``<|im_end|>`` that ends the turn), through the frozen SmolLM2.

Data: sklearn digits (train split, "What digit is this?" -> "seven"), Fashion-MNIST
(official train file, "What is this?" -> "sneaker") and synthetic shape scenes ("Describe the
image." -> "a small red circle and a large blue square").

Writes ``vision.safetensors``, ``config.json``, ``preprocessor_config.json`` and
``training_log.json`` to ``--out`` (default: the shipped ``src/headpursuit/data/tiny_vlm``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from headpursuit.evaluation.vision import data  # noqa: E402
from headpursuit.models.tiny_vlm import (  # noqa: E402
    IMAGE_TOKEN,
    N_IMAGE_TOKENS,
    SHIPPED_DIR,
    build_tiny_vlm,
    save_shipped,
    vlm_prompt,
)
from headpursuit.models.zoo import DEFAULT_MODEL, locate_named  # noqa: E402


def log(record: dict, records: list[dict]) -> None:
    records.append(record)
    print(json.dumps(record), flush=True)


def write_log(args: argparse.Namespace, records: list[dict]) -> None:
    path = args.out / "training_log.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    arguments = {k: str(v) for k, v in vars(args).items()}
    path.write_text(json.dumps({"args": arguments, "records": records}, indent=1))


def pixel_tensor(processor, examples: list[data.ImageExample]) -> torch.Tensor:
    """``[n, 3, 48, 48]`` normalised pixels."""
    return processor.image_processor(images=[e.image for e in examples], return_tensors="pt")[
        "pixel_values"
    ]


def image_tokens(model, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, 16, d_model]`` projected image tokens."""
    features = model.model.get_image_features(pixel_values=pixels).pooler_output
    return torch.stack(list(features))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--steps-a", type=int, default=600)
    parser.add_argument("--batch-a", type=int, default=96)
    parser.add_argument("--steps-b", type=int, default=120)
    parser.add_argument("--batch-b", type=int, default=16)
    parser.add_argument("--n-fashion", type=int, default=4000)
    parser.add_argument("--n-shapes", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget-min",
        type=float,
        default=32.0,
        help="stop stage B after this many minutes in all (the last checkpoint is kept)",
    )
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    records: list[dict] = []
    start = time.time()

    model, processor = build_tiny_vlm(locate_named(DEFAULT_MODEL))
    tokenizer = processor.tokenizer
    for param in model.parameters():
        param.requires_grad_(False)
    trainable = [
        p for n, p in model.named_parameters() if "language_model" not in n and "lm_head" not in n
    ]
    for param in trainable:
        param.requires_grad_(True)
    n_trainable = sum(p.numel() for p in trainable)

    sets = {
        "digits": data.digits("train"),
        "fashion": data.fashion("train", limit=args.n_fashion),
        "shapes": data.shapes("train", args.n_shapes),
    }
    pixels = {name: pixel_tensor(processor, examples) for name, examples in sets.items()}
    log(
        {
            "event": "data",
            "sizes": {k: len(v) for k, v in sets.items()},
            "trainable_params": n_trainable,
            "t": time.time() - start,
        },
        records,
    )

    # ---- stage A: alignment to the unembedding rows of the answer words -------------------
    embed = model.model.language_model.embed_tokens.weight.detach()  # [vocab, d]
    target_norm = embed.norm(dim=-1).median()
    answer_ids = {
        name: [tokenizer(e.answer).input_ids for e in examples] for name, examples in sets.items()
    }
    vocab = sorted({i for ids in answer_ids.values() for row in ids for i in row})
    column = {token: k for k, token in enumerate(vocab)}
    atoms = F.normalize(embed[vocab], dim=-1)  # [V, d]

    def bag(ids: list[int]) -> torch.Tensor:
        target = torch.zeros(len(vocab))
        for i in ids:
            target[column[i]] = 1.0
        return target / target.sum()

    targets = {name: torch.stack([bag(ids) for ids in rows]) for name, rows in answer_ids.items()}
    left = torch.tensor([r * 4 + c for r in range(4) for c in range(2)])
    right = left + 2
    # Object words with a leading space may be missing from `vocab`: add them as atoms.
    object_words = sorted(
        {
            i
            for e in sets["shapes"]
            for p in e.answer.split(" and ")
            for i in tokenizer(" " + p.removeprefix("a ")).input_ids
        }
    )
    for token in object_words:
        if token not in column:
            column[token] = len(vocab)
            vocab.append(token)
    atoms = F.normalize(embed[vocab], dim=-1)
    targets = {name: F.pad(t, (0, len(vocab) - t.shape[1])) for name, t in targets.items()}
    n_shapes = len(sets["shapes"])
    half_left = torch.zeros(n_shapes, len(vocab))
    half_right = torch.zeros(n_shapes, len(vocab))
    two_objects = torch.zeros(n_shapes, dtype=torch.bool)
    for index, example in enumerate(sets["shapes"]):
        phrases = example.answer.split(" and ")
        if len(phrases) == 2:
            two_objects[index] = True
            half_left[index] = bag(tokenizer(" " + phrases[0].removeprefix("a ")).input_ids)
            half_right[index] = bag(tokenizer(" " + phrases[1].removeprefix("a ")).input_ids)

    scale = torch.nn.Parameter(torch.tensor(10.0))
    optimiser = torch.optim.AdamW([*trainable, scale], lr=1e-3, weight_decay=0.01)
    names = list(sets)

    def soft_ce(tokens: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = scale * F.normalize(tokens, dim=-1) @ atoms.T
        return -(target * logits.log_softmax(-1)).sum(-1).mean()

    model.train()
    for step in range(args.steps_a):
        lr = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps_a))
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss = torch.zeros(())
        accuracy = {}
        per_task = args.batch_a // len(names)
        rows = {name: torch.randint(0, len(sets[name]), (per_task,)) for name in names}
        tokens_all = image_tokens(model, torch.cat([pixels[name][rows[name]] for name in names]))
        for k, name in enumerate(names):
            tokens = tokens_all[k * per_task : (k + 1) * per_task]  # [b, 16, d]
            pooled = tokens.mean(1)
            loss = loss + soft_ce(pooled, targets[name][rows[name]])
            loss = loss + 0.1 * (tokens.norm(dim=-1).mean() / target_norm - 1) ** 2
            with torch.no_grad():
                predicted = (pooled @ atoms.T).argmax(-1)
                hit = targets[name][rows[name]].gather(1, predicted[:, None]) > 0
                accuracy[name] = round(float(hit.float().mean()), 3)
            if name == "shapes":
                two = two_objects[rows[name]]
                if two.any():
                    chosen = rows[name][two]
                    loss = loss + soft_ce(tokens[two][:, left].mean(1), half_left[chosen])
                    loss = loss + soft_ce(tokens[two][:, right].mean(1), half_right[chosen])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0 or step == args.steps_a - 1:
            log(
                {
                    "stage": "A",
                    "step": step,
                    "loss": round(float(loss.detach()), 4),
                    "top1_in_answer": accuracy,
                    "t": round(time.time() - start, 1),
                },
                records,
            )

    model.eval()
    save_shipped(model, processor, args.out)
    log({"event": "checkpoint", "after": "stage A", "t": round(time.time() - start, 1)}, records)
    model.train()

    # ---- stage B: next-token loss on the answer tokens through the frozen SmolLM2 ---------
    optimiser = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    prompt_ids = {
        name: tokenizer(
            vlm_prompt(examples[0].question).replace(IMAGE_TOKEN, IMAGE_TOKEN * N_IMAGE_TOKENS)
        ).input_ids
        for name, examples in sets.items()
    }
    end_ids = {
        name: [tokenizer(e.answer + "<|im_end|>").input_ids for e in examples]
        for name, examples in sets.items()
    }
    pad = tokenizer.pad_token_id
    for step in range(args.steps_b):
        lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps_b))
        for group in optimiser.param_groups:
            group["lr"] = lr
        batch: list[tuple[list[int], int, torch.Tensor]] = []  # (ids, prompt length, pixels)
        for k in range(args.batch_b):
            name = names[k % len(names)]
            index = rng.randrange(len(sets[name]))
            batch.append(
                (
                    prompt_ids[name] + end_ids[name][index],
                    len(prompt_ids[name]),
                    pixels[name][index],
                )
            )
        width = max(len(ids) for ids, _, _ in batch)
        input_ids = torch.full((len(batch), width), pad)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100)
        for row, (ids, n_prompt, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        hidden = model.model(
            input_ids=input_ids,
            attention_mask=attention,
            pixel_values=torch.stack([p for _, _, p in batch]),
            use_cache=False,
        ).last_hidden_state  # [B, T, d]
        predict = labels[:, 1:] != -100  # position t predicts token t + 1
        logits = model.lm_head(hidden[:, :-1][predict])  # [n_answer_tokens, vocab]
        target = labels[:, 1:][predict]
        loss = F.cross_entropy(logits, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        token_accuracy = float((logits.argmax(-1) == target).float().mean())
        log(
            {
                "stage": "B",
                "step": step,
                "loss": round(float(loss.detach()), 4),
                "token_accuracy": round(token_accuracy, 3),
                "t": round(time.time() - start, 1),
            },
            records,
        )
        if (step + 1) % 5 == 0:
            model.eval()
            save_shipped(model, processor, args.out)
            write_log(args, records)
            model.train()
        if time.time() - start > 60 * args.budget_min:
            log({"event": "budget reached", "steps_done": step + 1}, records)
            break

    model.eval()
    out = save_shipped(model, processor, args.out)
    log({"event": "saved", "out": str(out), "t": round(time.time() - start, 1)}, records)
    write_log(args, records)


if __name__ == "__main__":
    main()
