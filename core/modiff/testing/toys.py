"""Tiny reference components for every role, registered by one plugin object.

They exist so that the core (and a plugin author testing one component) can
run the whole machinery — settings, assembly, training, sampling, runs —
in milliseconds, without depending on any real plugin. They are honest
implementations of the protocols, just very small::

    from modiff.testing import plugin_registry
    from modiff.testing.toys import ToyPlugin

    registry = plugin_registry(ToyPlugin())
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..assembly import BuildContext
from ..hookspecs import hookimpl
from ..noise import randn
from ..plugins import ComponentSettings
from ..protocols import Batch, Conditioning, ConditioningSpec, Example, TextEmbedding

COLOURS = {"red": (1.0, -0.8, -0.8), "green": (-0.8, 1.0, -0.8), "blue": (-0.8, -0.8, 1.0)}


class ToyDataSettings(ComponentSettings):
    image_size: int = Field(8, ge=2)
    size: int = Field(64, ge=1)
    seed: int = 0


class ToyDataset:
    """A coloured square on black, captioned with its colour; mask 1 under the square."""

    num_classes = 2

    def __init__(self, s: ToyDataSettings):
        self.image_size, self.size, self.seed = s.image_size, s.size, s.seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.size:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        name = list(COLOURS)[int(torch.randint(0, len(COLOURS), (1,), generator=g))]
        n = self.image_size
        side = max(1, n // 2)
        y, x = (int(v) for v in torch.randint(0, n - side + 1, (2,), generator=g))
        image = torch.full((3, n, n), -1.0)
        mask = torch.zeros(n, n, dtype=torch.int64)
        image[:, y : y + side, x : x + side] = torch.tensor(COLOURS[name]).view(3, 1, 1)
        mask[y : y + side, x : x + side] = 1
        return Example(image, f"a {name} square", mask)

    def captions(self) -> Iterable[str]:
        return (self[i].caption for i in range(self.size))


class ToyEncoderSettings(ComponentSettings):
    downscale: int = Field(1, ge=1)
    trainable: bool = False
    sample_posterior: bool = False


class ToyEncoder(nn.Module):
    """Average pooling by ``downscale`` into 3 channels, nearest upsampling back;
    optionally with a 1×1 conv trained by reconstruction (to exercise stages),
    and with ``sample_posterior`` a little noise from the generator(s) it is
    given added to each latent (an encoder whose latents cannot be cached)."""

    latent_channels = 3
    #: The standard deviation of the "posterior" around the pooled image.
    spread = 0.1

    def __init__(self, s: ToyEncoderSettings):
        super().__init__()
        self.downscale = s.downscale
        self.mix = nn.Conv2d(3, 3, 1)
        nn.init.eye_(self.mix.weight.data.view(3, 3))
        nn.init.zeros_(self.mix.bias)
        self.register_buffer("scale", torch.ones(()))
        self.needs_training = s.trainable
        self.sample_posterior = s.sample_posterior

    @property
    def scaling_factor(self) -> float:
        return float(self.scale)

    def encode(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        f = self.downscale
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of downscale {f}")
        z = nn.functional.avg_pool2d(images, f) if f > 1 else images
        z = self.mix(z) * self.scale
        if self.sample_posterior:
            z = z + self.spread * randn(z.shape, generator, device=z.device, dtype=z.dtype)
        return z

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents [B, {self.latent_channels}, h, w], got shape {tuple(latents.shape)}")
        x = latents / self.scale
        return nn.functional.interpolate(x, scale_factor=self.downscale) if self.downscale > 1 else x

    def training_loss(self, batch: Batch) -> torch.Tensor:
        return (self.decode(self.encode(batch.images)) - batch.images).pow(2).mean()

    def finish_training(self, batches: Iterable[Batch]) -> None:
        with torch.no_grad():
            z = torch.cat([self.encode(b.images) / self.scale for b in batches])
            self.scale.fill_(1.0 / max(float(z.std()), 1e-6))
        self.needs_training = False


class ToyTextSettings(ComponentSettings):
    dim: int = Field(8, ge=1)
    max_tokens: int = Field(8, ge=1)
    joint_training: bool = False


class ToyTextEmbedder(nn.Module):
    """Each word's vector is a fixed pseudo-random function of the word (a hash);
    with ``joint_training``, scaled by one weight the denoiser stage trains."""

    def __init__(self, s: ToyTextSettings):
        super().__init__()
        self.dim, self.max_tokens = s.dim, s.max_tokens
        #: A constant 1 whose device and dtype the embeddings follow (``.to()`` moves it).
        self.register_buffer("unit", torch.ones(()))
        self.joint_training = s.joint_training
        if s.joint_training:
            self.gain = nn.Parameter(torch.ones(()))

    def _word(self, word: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(word.encode("utf-8", "surrogatepass")).digest()[:8], "little")
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed % (2**63)))

    def embed(self, prompts: Sequence[str]) -> TextEmbedding:
        # A prompt without words is one empty word, so that every row has a real token.
        words = [p.split() or [""] for p in prompts]
        cut = sum(len(w) > self.max_tokens for w in words)
        if cut:
            warnings.warn(
                f"{cut} prompt(s) longer than {self.max_tokens} words were truncated", UserWarning, stacklevel=2
            )
        words = [w[: self.max_tokens] for w in words]
        length = max(1, max((len(w) for w in words), default=1))
        tokens = torch.zeros(len(prompts), length, self.dim)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                tokens[i, j] = self._word(w)
                mask[i, j] = True
        tokens, mask = tokens.to(self.unit) * self.unit, mask.to(self.unit.device)
        if self.joint_training:
            tokens = tokens * self.gain
        pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextEmbedding(tokens, mask, pooled)


class ToyConditionerSettings(ComponentSettings):
    width: int = Field(8, ge=1)


class ToyConditioner(nn.Module):
    """Pooled text to a vector, tokens to a context; zeros as the null.
    Image context (a task's mask or masked image) is passed through as concat
    (zeros when a call gives none)."""

    def __init__(self, s: ToyConditionerSettings, text_dim: int, image_channels: int = 0, size: int | None = None):
        super().__init__()
        self.to_vector = nn.Linear(text_dim, s.width)
        self.to_context = nn.Linear(text_dim, s.width)
        self.size = size
        self.spec = ConditioningSpec(concat_channels=image_channels, context_dim=s.width, vector_dim=s.width)

    @staticmethod
    def arguments(ctx: BuildContext) -> tuple[int, int, int | None]:
        """``(text_dim, image_channels, size)`` from the build context."""
        channels = ctx.image_context_channels
        return (ctx.text_embedder.dim if ctx.text_embedder else 1, channels, ctx.latent_size if channels else None)

    def _image(self, image_context: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        k = self.spec.concat_channels
        if image_context is not None or not k:
            return image_context
        w = self.to_vector.weight
        return torch.zeros(batch_size, k, self.size or 1, self.size or 1, device=w.device, dtype=w.dtype)

    def condition(
        self, text: TextEmbedding | None, *, image_context: torch.Tensor | None = None, batch_size: int | None = None
    ) -> Conditioning:
        if text is None:
            return self.null(batch_size or 1, image_context=image_context)
        cond = Conditioning(None, self.to_context(text.tokens), text.mask, self.to_vector(text.pooled))
        return cond.with_concat(self._image(image_context, len(text)))

    def null(
        self, batch_size: int, *, like: TextEmbedding | None = None, image_context: torch.Tensor | None = None
    ) -> Conditioning:
        length = 1 if like is None else int(like.tokens.shape[1])
        w = self.spec.context_dim or 1
        device, dtype = self.to_vector.weight.device, self.to_vector.weight.dtype
        mask = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
        mask[:, 0] = True
        null = Conditioning(
            None,
            torch.zeros(batch_size, length, w, device=device, dtype=dtype),
            mask,
            torch.zeros(batch_size, self.spec.vector_dim or 1, device=device, dtype=dtype),
        )
        return null.with_concat(self._image(image_context, batch_size))


class ToyDenoiserSettings(ComponentSettings):
    hidden: int = Field(16, ge=1)


class ToyDenoiser(nn.Module):
    """Two convolutions, modulated by time, the conditioning vector and the
    masked mean of the context."""

    def __init__(self, s: ToyDenoiserSettings, ctx: BuildContext):
        super().__init__()
        spec = ctx.denoiser_spec
        assert spec is not None
        self.spec = spec
        cs = spec.conditioning
        out = spec.num_classes if spec.head == "segment" else spec.out_channels
        self.conv_in = nn.Conv2d(spec.in_channels + cs.concat_channels, s.hidden, 3, padding=1)
        self.time = nn.Linear(1, s.hidden)
        self.vec = nn.Linear(cs.vector_dim, s.hidden) if cs.vector_dim else None
        self.ctx = nn.Linear(cs.context_dim, s.hidden) if cs.context_dim else None
        self.conv_out = nn.Conv2d(s.hidden, out, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: Conditioning) -> torch.Tensor:
        if c.concat is not None:
            x = torch.cat([x, c.concat], 1)
        h = self.conv_in(x)
        emb = self.time(t.to(h.dtype).view(-1, 1) / 1000.0)
        if self.vec is not None and c.vector is not None:
            emb = emb + self.vec(c.vector)
        if self.ctx is not None and c.context is not None:
            m = c.context_mask
            if m is None:
                m = torch.ones(c.context.shape[:2], dtype=torch.bool, device=c.context.device)
            m = m.to(c.context.dtype)[..., None]
            emb = emb + self.ctx((c.context * m).sum(1) / m.sum(1).clamp(min=1))
        return self.conv_out(torch.nn.functional.silu(h + emb[:, :, None, None]))


class ToySchedulerSettings(ComponentSettings):
    num_train_timesteps: int = Field(100, ge=2)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    #: DDIM's eta: 1 adds DDPM-like noise at every step, 0 is deterministic.
    eta: float = Field(1.0, ge=0.0, le=1.0)


class ToyScheduler:
    """A linear-beta DDIM (``eta = 1`` noise by default), written as plainly as possible."""

    def __init__(self, s: ToySchedulerSettings):
        self.num_train_timesteps = s.num_train_timesteps
        self.prediction_type = s.prediction_type
        self.eta = s.eta
        betas = torch.linspace(1e-4, 0.05, s.num_train_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod.to(t.device)[t.long()].to(like).view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._abar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        a = self._abar(t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def sample_timesteps(self, batch_size: int, *, generator: Any = None, device: Any = None) -> torch.Tensor:
        return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator).to(device or "cpu")

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones(t.shape[0], device=t.device)

    def timesteps(self, steps: int) -> torch.Tensor:
        return torch.linspace(self.num_train_timesteps - 1, 0, steps).round().long()

    def _x0_and_eps(self, pred: torch.Tensor, x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean sample and the noise a prediction of ``prediction_type`` implies at ``x``."""
        if self.prediction_type == "epsilon":
            return (x - (1 - a).sqrt() * pred) / a.sqrt(), pred
        if self.prediction_type == "sample":
            return pred, (x - a.sqrt() * pred) / (1 - a).sqrt()
        return a.sqrt() * x - (1 - a).sqrt() * pred, (1 - a).sqrt() * x + a.sqrt() * pred

    def sample(self, model_fn, noise, steps, *, generator=None, callback=None, start_step=0):  # type: ignore[no-untyped-def]
        x = noise
        ts = self.timesteps(steps)
        for i in range(start_step, steps):
            t = ts[i]
            a = self.alphas_cumprod[t].to(x)
            x0, eps = self._x0_and_eps(model_fn(x, torch.full((x.shape[0],), float(t), device=x.device)), x, a)
            a_prev = self.alphas_cumprod[ts[i + 1]].to(x) if i + 1 < steps else torch.ones((), dtype=x.dtype)
            sigma = self.eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if self.eta:
                x = x + sigma * randn(x.shape, generator, device=x.device, dtype=x.dtype)
            if callback is not None:
                callback(i, t, x, x0)
        return x


class ToyEvaluator:
    """Fraction of generated images whose brightest channel is the prompt's colour."""

    def evaluate(self, pipeline: Any, *, prompts: Sequence[str] | None = None) -> dict[str, Any]:
        prompts = list(prompts or [f"a {c} square" for c in COLOURS])
        images = pipeline.generate_tensor(prompts, seed=0)
        correct = 0
        for prompt, image in zip(prompts, images):
            named = next((i for i, c in enumerate(COLOURS) if c in prompt.split()), None)
            correct += int(named is not None and int(image.mean((1, 2)).argmax()) == named)
        return {"accuracy": correct / max(1, len(prompts)), "prompts": len(prompts)}


class ColourPipeline:
    """A stand-in for :class:`modiff.Pipeline` for evaluator tests: for each prompt, the
    square of the colour it names (grey when it names none) on black, with a little
    noise drawn from ``seed``; ``shift = 1`` draws the next colour (always wrong)."""

    def __init__(self, image_size: int = 8, shift: int = 0):
        self.image_size, self.shift = image_size, shift

    def generate_tensor(self, prompts: Sequence[str], *, seed: int = 0, **options: Any) -> torch.Tensor:
        n = self.image_size
        out = torch.full((len(prompts), 3, n, n), -1.0)
        names = list(COLOURS)
        for i, prompt in enumerate(prompts):
            named = next((k for k, c in enumerate(names) if c in prompt.split()), None)
            colour = (0.0, 0.0, 0.0) if named is None else COLOURS[names[(named + self.shift) % len(names)]]
            out[i, :, n // 4 : n - n // 4, n // 4 : n - n // 4] = torch.tensor(colour).view(3, 1, 1)
        noise = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        return (out + 0.05 * noise).clamp(-1, 1)


class ToyPlugin:
    """Registers one toy component per role, each named ``toy``."""

    __name__ = "toys"

    @hookimpl
    def register_datasets(self, register: Any) -> None:
        register("toy", lambda s, ctx: ToyDataset(s), ToyDataSettings, description="coloured squares")

    @hookimpl
    def register_encoders(self, register: Any) -> None:
        register("toy", lambda s, ctx: ToyEncoder(s), ToyEncoderSettings, description="average pooling")

    @hookimpl
    def register_text_embedders(self, register: Any) -> None:
        register("toy", lambda s, ctx: ToyTextEmbedder(s), ToyTextSettings, description="hashed words")

    @hookimpl
    def register_conditioners(self, register: Any) -> None:
        register(
            "toy",
            lambda s, ctx: ToyConditioner(s, *ToyConditioner.arguments(ctx)),
            ToyConditionerSettings,
            description="vector and context",
        )

    @hookimpl
    def register_denoisers(self, register: Any) -> None:
        register("toy", lambda s, ctx: ToyDenoiser(s, ctx), ToyDenoiserSettings, description="two convolutions")

    @hookimpl
    def register_evaluators(self, register: Any) -> None:
        register("toy", lambda s, ctx: ToyEvaluator(), description="dominant colour matches the prompt")

    @hookimpl
    def register_schedulers(self, register: Any) -> None:
        register("toy", lambda s, ctx: ToyScheduler(s), ToySchedulerSettings, description="linear-beta DDIM")


TOY_SETTINGS: dict[str, Any] = {
    "run": {"name": "toy", "seed": 0},
    "data": {"plugin": "toy"},
    "encoder": {"plugin": "toy"},
    "text_embedder": {"plugin": "toy"},
    "conditioner": {"plugin": "toy"},
    "denoiser": {"plugin": "toy"},
    "scheduler": {"plugin": "toy"},
    "evaluator": {"plugin": "toy"},
    "train": {
        "steps": 4,
        "batch_size": 4,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "log_every": 1,
        "encoder": {"steps": 2, "batch_size": 4},
        "text_embedder": {"steps": 2, "batch_size": 4},
    },
    "sample": {"steps": 3, "guidance": 2.0, "prompts": ["a red square", "a blue square"]},
}
"""A complete settings dict using only toys; trains in well under a second."""
