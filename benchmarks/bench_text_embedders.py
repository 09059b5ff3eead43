"""Text embedders on the shapes world: what CLIP learns, what word2vec can tell apart.

    python benchmarks/bench_text_embedders.py            # core stage defaults (1000 steps, batch 32)
    python benchmarks/bench_text_embedders.py --steps 300 --batch-size 64
    python benchmarks/bench_text_embedders.py --objects 2 # two objects per image, like `modiff demo`

CLIP part: a small CLIP with the plugin's default settings is trained
contrastively the way the core's text-embedder stage does it (AdamW, linear
warm-up, cosine decay, gradient clipping at 1.0, the `[train.text_embedder]`
defaults unless overridden), then evaluated on held-out image-caption pairs
from another seed: top-1 retrieval both ways, by exact caption and by content
(any caption naming the same colour, shape and position counts), and per
attribute. The references, measured in the same run, are chance and the same
model before training.

word2vec part: vectors fitted on the dataset's caption corpus with the
plugin's defaults; nearest neighbours of the colour and shape words, and the
mean cosine similarity within colours, within shapes and across, for the raw
vectors and after subtracting the vocabulary mean. For comparison, the
trained CLIP's pooled embeddings of the one-word prompts.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

import modiff
from modiff.protocols import Batch
from modiff.settings import StageSettings
from modiff.testing import build_one
from modiff.training.optim import adamw

COLOURS = ["red", "green", "blue", "yellow", "purple", "cyan"]
SHAPES = ["circle", "square", "triangle"]


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def collate(ds: Any, indices: Sequence[int]) -> Batch:
    ex = [ds[i] for i in indices]
    return Batch(torch.stack([e.image for e in ex]), [e.caption for e in ex])


def content(ds: Any, i: int) -> dict[str, Hashable]:
    """What example ``i`` shows, from the dataset's scene description."""
    scene = ds.scene(i)
    objs = scene.objects
    return {
        "content": frozenset((o.colour, o.shape, o.position) for o in objs),
        "colour": tuple(sorted(o.colour for o in objs)),
        "shape": tuple(sorted(o.shape for o in objs)),
        "position": tuple(sorted(str(o.position) for o in objs)),
    }


def lr_at(step: int, s: StageSettings) -> float:
    """Linear warm-up then cosine decay to zero (as the core's stages do)."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    span = max(1, s.steps - s.warmup_steps)
    return s.lr * 0.5 * (1 + math.cos(math.pi * (step - s.warmup_steps) / span))


@torch.no_grad()
def evaluate_clip(e: Any, held: Batch, facts: list[dict[str, Hashable]]) -> dict[str, float]:
    from modiff_clip.contrastive import retrieval_accuracy

    e.eval()
    img = torch.cat([e.image_features(held.images[i : i + 256]) for i in range(0, len(held), 256)])
    txt = torch.cat([e.text_features(held.captions[i : i + 256]) for i in range(0, len(held), 256)])
    exact = retrieval_accuracy(img, txt, held.captions)
    by_content = retrieval_accuracy(img, txt, held.captions, keys=[f["content"] for f in facts])
    out = {
        "i2t exact": exact["image_to_text"],
        "t2i exact": exact["text_to_image"],
        "chance exact": exact["chance"],
        "i2t content": by_content["image_to_text"],
        "t2i content": by_content["text_to_image"],
        "chance content": by_content["chance"],
    }
    best = (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T).argmax(1).tolist()
    for attr in ("colour", "shape", "position"):
        out[f"i2t {attr}"] = sum(facts[j][attr] == facts[i][attr] for i, j in enumerate(best)) / len(best)
        counts: dict[Hashable, int] = {}
        for f in facts:
            counts[f[attr]] = counts.get(f[attr], 0) + 1
        out[f"chance {attr}"] = sum(c * c for c in counts.values()) / len(facts) ** 2
    return out


def bench_clip(args: argparse.Namespace, train_ds: Any, held_ds: Any) -> Any:
    stage = StageSettings(
        **{
            k: v
            for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr}.items()
            if v is not None
        }
    )
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    e = build_one("text_embedder", "clip", {}, context=modiff.BuildContext(dataset=train_ds))
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in e.parameters())
    n_text = sum(p.numel() for p in e.text_model.parameters())
    held = collate(held_ds, range(len(held_ds)))
    facts = [content(held_ds, i) for i in range(len(held_ds))]
    before = evaluate_clip(e, held, facts)

    e.train()
    params = [p for p in e.parameters() if p.requires_grad]
    opt = adamw(params, lr=stage.lr, weight_decay=stage.weight_decay)
    g = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(stage.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, stage)
        idx = torch.randint(len(train_ds), (stage.batch_size,), generator=g).tolist()
        loss = e.training_loss(collate(train_ds, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if stage.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if args.verbose and step % 100 == 0:
            print(f"  step {step:5d}  loss {losses[-1]:.3f}", flush=True)
    train_s = time.perf_counter() - t0
    e.finish_training([])
    after = evaluate_clip(e, held, facts)

    cfg = e.model.config
    print(f"\n## CLIP (default settings): text {cfg.text_config.num_hidden_layers}x{cfg.text_config.hidden_size}, "
          f"vision {cfg.vision_config.num_hidden_layers}x{cfg.vision_config.hidden_size} patch "
          f"{cfg.vision_config.patch_size}, vocabulary {len(e.tokenizer)} tokens, "
          f"{n_params / 1e6:.2f} M parameters ({n_text / 1e6:.2f} M in the text tower)")
    print(f"trained {stage.steps} steps x batch {stage.batch_size}, lr {stage.lr}, warm-up {stage.warmup_steps}: "
          f"{train_s:.1f} s ({1000 * train_s / max(1, stage.steps):.0f} ms/step, {torch.get_num_threads()} threads); "
          f"build {build_s:.2f} s; loss {sum(losses[:10]) / 10:.3f} (first 10) -> "
          f"{sum(losses[-10:]) / 10:.3f} (last 10)")
    print(f"held-out pairs: {len(held_ds)} (shapes seed {args.seed + 1}, max_objects {args.objects})\n")
    rows = []
    for metric, chance_key in [
        ("i2t exact", "chance exact"),
        ("t2i exact", "chance exact"),
        ("i2t content", "chance content"),
        ("t2i content", "chance content"),
        ("i2t colour", "chance colour"),
        ("i2t shape", "chance shape"),
        ("i2t position", "chance position"),
    ]:
        chance = after[chance_key]
        rows.append([metric, chance, before[metric], after[metric], f"{after[metric] / chance:.1f}x"])
    print(table(rows, ["top-1 retrieval", "chance", "untrained", "trained", "trained/chance"]))
    return e


def cosine_stats(vectors: dict[str, torch.Tensor]) -> dict[str, float]:
    def mean_cos(pairs: list[tuple[str, str]]) -> float:
        return sum(float(F.cosine_similarity(vectors[a], vectors[b], dim=0)) for a, b in pairs) / len(pairs)

    return {
        "colour-colour": mean_cos(list(itertools.combinations(COLOURS, 2))),
        "shape-shape": mean_cos(list(itertools.combinations(SHAPES, 2))),
        "colour-shape": mean_cos([(c, s) for c in COLOURS for s in SHAPES]),
    }


def bench_word2vec(args: argparse.Namespace, train_ds: Any, clip: Any | None) -> None:
    corpus = list(train_ds.captions())
    print(f"\n## word2vec on {len(corpus)} captions")
    results: dict[str, dict[str, float]] = {}
    fit_times = []
    shares: list[str] = []
    shown = None
    for name, params in [
        ("skip-gram (default)", {}),
        ("CBOW", {"skip_gram": False}),
        ("skip-gram, whitened", {"standardize": "whiten"}),
    ]:
        e = build_one("text_embedder", "word2vec", params)
        t0 = time.perf_counter()
        e.fit(corpus)
        fit_times.append((name, time.perf_counter() - t0, len(e.words), e.dim))
        # The vectors as the embedder uses them (before positions are added).
        raw = {w: (e.vector(w) - e.offset) @ e.transform for w in COLOURS + SHAPES}
        mean = ((e.vectors[2:] - e.offset) @ e.transform).mean(0)
        centred = {w: v - mean for w, v in raw.items()}
        results[f"word2vec {name}"] = cosine_stats(raw)
        results[f"word2vec {name}, vocabulary mean removed"] = cosine_stats(centred)
        # What is left once each group's own mean (all colours, all shapes) is
        # removed: the part of a vector that tells one colour from another.
        groups = {w: COLOURS if w in COLOURS else SHAPES for w in raw}
        residual = {w: v - torch.stack([raw[u] for u in groups[w]]).mean(0) for w, v in raw.items()}
        results[f"word2vec {name}, group mean removed"] = cosine_stats(residual)
        share = sum(float(residual[w].norm() / raw[w].norm()) for w in COLOURS) / len(COLOURS)
        shares.append(f"{name}: the colour-specific part is {100 * share:.1f} % of a colour vector's length")
        if shown is None:
            shown = e
    for name, seconds, vocab, dim in fit_times:
        print(f"fit {name}: {seconds:.2f} s, {vocab} words x {dim}")
    print("\n".join(shares))
    assert shown is not None
    print("\nnearest neighbours (cosine) of the default (skip-gram) vectors:")
    m = F.normalize(shown.vectors[2:], dim=-1)
    rows = []
    for w in COLOURS + SHAPES:
        sims = m @ F.normalize(shown.vector(w), dim=0)
        order = sims.argsort(descending=True).tolist()
        neigh = [(shown.words[j], float(sims[j])) for j in order if shown.words[j] != w][:4]
        rows.append([w, ", ".join(f"{n} {s:.3f}" for n, s in neigh)])
    print(table(rows, ["word", "4 nearest"]))
    if clip is not None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pooled = clip.embed(COLOURS + SHAPES).pooled
            results["CLIP pooled (trained above)"] = cosine_stats(dict(zip(COLOURS + SHAPES, pooled)))
            sentences = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
            ps = clip.embed(sentences).pooled
            same_shape = [
                float(F.cosine_similarity(ps[i], ps[j], dim=0))
                for i, j in itertools.combinations(range(len(sentences)), 2)
                if sentences[i].split()[2] == sentences[j].split()[2]
            ]
        print(f"\nCLIP: mean cosine of pooled 'a <colour> <shape>' prompts differing only in colour: "
              f"{sum(same_shape) / len(same_shape):.3f}")
    print("\nmean cosine similarity between word vectors (a group of k random directions would give -1/(k-1) "
          "after removing the group mean: -0.2 for colours, -0.5 for shapes):")
    print(table([[k, v["colour-colour"], v["shape-shape"], v["colour-shape"]] for k, v in results.items()],
                ["vectors", "colour-colour", "shape-shape", "colour-shape"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None, help="CLIP training steps (default: core stage default)")
    p.add_argument("--batch-size", type=int, default=None, help="default: core stage default")
    p.add_argument("--lr", type=float, default=None, help="default: core stage default")
    p.add_argument("--held-out", type=int, default=512)
    p.add_argument("--objects", type=int, default=1, help="shapes max_objects")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--skip-clip", action="store_true")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train_ds = build_one("data", "shapes", {"seed": args.seed, "max_objects": args.objects})
    held_ds = build_one("data", "shapes", {"seed": args.seed + 1, "size": args.held_out, "max_objects": args.objects})
    clip = None if args.skip_clip else bench_clip(args, train_ds, held_ds)
    bench_word2vec(args, train_ds, clip)


if __name__ == "__main__":
    main()
