"""Training smoke tests: each conditioner, trained jointly with a tiny UNet, carries the text.

The problem: four prompts (fixed random token embeddings of different
lengths), each with its own fixed random 4x8x8 target. The denoiser predicts
the clean sample from a noisy one; at high noise only the conditioning can tell
which target is meant. After a few hundred steps the loss must have dropped,
and be clearly lower with the right prompts than with the prompts shuffled:
the conditioning, not just the noisy input, is what was learned. Condition
dropout is on, so the learned null is trained too.

``none`` has no text; it is trained with the target itself as its image
context, which exercises the image-context channels the same way.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from modiff.assembly import BuildContext
from modiff.protocols import DenoiserSpec, TextEmbedding
from modiff.settings import RunSettings
from modiff.testing import build_one
from modiff.testing.contracts.conditioner import FakeTextEmbedder, fake_embedding

pytest.importorskip("modiff_unet")

TEXT_DIM, SIZE, CHANNELS, PROMPTS = 8, 8, 4, 4
STEPS, BATCH = 150, 8


def schedule() -> torch.Tensor:
    """alpha-bar of a 1000-step linear-beta schedule."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)


def build(plugin: str, settings: dict[str, Any]) -> tuple[Any, Any]:
    torch.manual_seed(0)
    ctx = BuildContext(run=RunSettings(image_size=SIZE), text_embedder=FakeTextEmbedder(TEXT_DIM))  # type: ignore[arg-type]
    conditioner = build_one("conditioner", plugin, settings, context=ctx)
    ctx.conditioner = conditioner
    ctx.denoiser_spec = DenoiserSpec(CHANNELS, CHANNELS, SIZE, conditioner.spec)
    # Attention only where there is a context to attend to, at the coarse level: the
    # smallest network that can carry each kind of conditioning, to keep the test fast.
    attention = [1] if conditioner.spec.context_dim is not None else []
    unet = build_one(
        "denoiser",
        "unet",
        {
            "channels": [8, 16],
            "layers_per_block": 1,
            "norm_num_groups": 4,
            "head_dim": 8,
            "attention_levels": attention,
            "mid_attention": False,
        },
        context=ctx,
    )
    return conditioner.train(), unet.train()


class Problem:
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.text = fake_embedding(PROMPTS, 5, TEXT_DIM, seed=2, lengths=[2, 5, 3, 4])
        self.targets = torch.randn(PROMPTS, CHANNELS, SIZE, SIZE, generator=g)
        self.abar = schedule()

    def batch(self, g: torch.Generator, n: int) -> tuple[TextEmbedding, torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, PROMPTS, (n,), generator=g)
        x0 = self.targets[idx]
        t = torch.randint(0, 1000, (n,), generator=g)
        a = self.abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
        return self.text.index(idx), x0, x_t, t.float()


def loss_of(
    conditioner: Any,
    unet: Any,
    text: TextEmbedding,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    image: bool,
    drop: torch.Tensor | None = None,
) -> torch.Tensor:
    cond = conditioner.condition(text, image_context=x0 if image else None)
    if drop is not None and bool(drop.any()):
        null = conditioner.null(len(text), like=text)
        if image:
            null = conditioner.condition(None, image_context=x0)
        cond = cond.where(drop, null)
    return (unet(x_t, t, cond) - x0).square().mean()


@pytest.mark.parametrize(
    "plugin, settings",
    [
        ("cross-attention", {"context_dim": 16}),
        ("concat", {"channels": 4}),
        ("vector", {"vector_dim": 16}),
        ("hybrid", {"channels": 2, "context_dim": 16}),
        ("none", {"image_context_channels": CHANNELS}),
    ],
)
def test_training_reduces_the_loss_and_uses_the_conditioning(plugin: str, settings: dict[str, Any]) -> None:
    conditioner, unet = build(plugin, settings)
    image = plugin == "none"
    problem = Problem()
    params = list(unet.parameters()) + list(conditioner.parameters())
    opt = torch.optim.Adam(params, lr=5e-3)
    g = torch.Generator().manual_seed(3)

    eval_g = torch.Generator().manual_seed(4)
    text, x0, x_t, t = problem.batch(eval_g, 32)
    t = t.clamp(min=900)  # high noise: the input alone says little about the target
    shuffled = torch.roll(torch.arange(32), 1)

    def evaluate() -> tuple[float, float]:
        conditioner.eval(), unet.eval()
        with torch.no_grad():
            right = loss_of(conditioner, unet, text, x0, x_t, t, image)
            wrong_text = text.index(shuffled)
            if image:  # shuffle the image context instead of the (unused) text
                cond = conditioner.condition(None, image_context=x0[shuffled])
                wrong = (unet(x_t, t, cond) - x0).square().mean()
            else:
                wrong = loss_of(conditioner, unet, wrong_text, x0, x_t, t, image)
        conditioner.train(), unet.train()
        return float(right), float(wrong)

    before, _ = evaluate()
    for _ in range(STEPS):
        batch_text, bx0, bx_t, bt = problem.batch(g, BATCH)
        drop = torch.rand(BATCH, generator=g) < 0.2
        loss = loss_of(conditioner, unet, batch_text, bx0, bx_t, bt, image, drop)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after, shuffled_loss = evaluate()

    print(f"{plugin}: before {before:.3f} after {after:.3f} shuffled {shuffled_loss:.3f}")
    assert math.isfinite(after)
    assert after < 0.3 * before, f"{plugin}: loss {before:.3f} -> {after:.3f}"
    assert after < 0.5 * shuffled_loss, f"{plugin}: right prompts {after:.3f} vs shuffled {shuffled_loss:.3f}"
    learned_nulls = [p for n, p in conditioner.named_parameters() if n.startswith("null_")]
    if not image:
        assert learned_nulls and all(float(p.detach().abs().sum()) > 0 for p in learned_nulls), (
            "the null was not trained"
        )
