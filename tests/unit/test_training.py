"""The core training loop, run directories and the pipeline, on toy components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from modiff.distributed import World
from modiff.errors import ModiffError, RunError, WeightsError
from modiff.pipeline import Pipeline
from modiff.runs import RunDir
from modiff.settings import load_settings, resolve
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.training import NonFiniteLoss, TrainingInterrupted, batch_indices, lr_at
from modiff.workflows import train_run

REGISTRY = plugin_registry(ToyPlugin(), entry_points=True)


def settings(**overrides: Any):
    data = json.loads(json.dumps(TOY_SETTINGS))
    for dotted, value in overrides.items():
        *path, key = dotted.split("__")
        table = data
        for p in path:
            table = table.setdefault(p, {})
        table[key] = value
    return resolve(load_settings(base=data, environ={}), REGISTRY)


@pytest.fixture(autouse=True)
def toys(use_registry):
    use_registry(REGISTRY)


def weights(run: RunDir, role: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run.weights(role)))


def test_train_writes_a_complete_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_run(settings(encoder__trainable=True), run, progress=False)
    assert run.settings.is_file()
    state = run.read_state()
    assert state["stages_done"] == ["encoder", "denoiser"]
    assert {p.name for p in run.checkpoint().components.iterdir()} >= {
        "encoder.safetensors",
        "denoiser.safetensors",
        "conditioner.safetensors",
    }
    metrics = run.read_metrics()
    assert [m["step"] for m in metrics if m["stage"] == "denoiser"] == [1, 2, 3, 4]
    assert all(m["loss"] == m["loss"] for m in metrics)
    assert (run.samples / "final.png").is_file()
    assert not list(run.path.rglob("*.tmp")), "no temporary file may be left behind"


@pytest.mark.slow
def test_the_denoiser_loss_falls(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_run(
        settings(train__steps=60, train__lr=5e-3, train__log_every=10, train__checkpoint_every=100), run, progress=False
    )
    losses = [m["loss"] for m in run.read_metrics() if m["stage"] == "denoiser"]
    assert losses[-1] < losses[0] * 0.8, losses


def interrupted_then_resumed(tmp_path: Path, monkeypatch, **overrides: Any) -> tuple[RunDir, RunDir]:
    """A run trained uninterrupted, and the same run stopped by Ctrl-C during its fourth denoiser step and resumed."""
    full = RunDir(tmp_path / "full")
    train_run(settings(train__steps=6, **overrides), full, progress=False)

    cut = RunDir(tmp_path / "cut")
    from modiff.training import losses

    real = losses.DenoiserLoss.__call__
    calls = {"n": 0}

    def interrupting(self, batch, indices, g):
        calls["n"] += 1
        if calls["n"] == 4:  # during the fourth step
            raise KeyboardInterrupt
        return real(self, batch, indices, g)

    monkeypatch.setattr(losses.DenoiserLoss, "__call__", interrupting)
    with pytest.raises(TrainingInterrupted, match="step 3; checkpoint saved"):
        train_run(settings(train__steps=6, **overrides), cut, progress=False)
    assert cut.read_state()["step"] == 3
    monkeypatch.setattr(losses.DenoiserLoss, "__call__", real)
    train_run(settings(train__steps=6, **overrides), cut, resume=True, progress=False)
    return full, cut


def test_resume_after_interrupt_is_bit_identical(tmp_path: Path, monkeypatch) -> None:
    full, cut = interrupted_then_resumed(tmp_path, monkeypatch)
    for role in ("denoiser", "conditioner"):
        a, b = weights(full, role), weights(cut, role)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (role, k)
    steps = [m["step"] for m in cut.read_metrics() if m["stage"] == "denoiser"]
    assert steps == [1, 2, 3, 4, 5, 6], "metrics past the checkpoint are dropped on resume"


def test_a_resumed_stage_trains_the_parameters_its_assets_rebuild(tmp_path: Path, monkeypatch) -> None:
    """``load_assets`` may replace a parameter (the text transformer rebuilds its word table to the
    saved vocabulary's size): a resume reads assets before the optimizer takes the parameters, or the
    optimizer steps the replaced tensor and the new one never trains (a resumed run drifted)."""
    from torch import nn

    from modiff.testing.toys import ToyTextEmbedder

    def save_assets(self: ToyTextEmbedder, directory: Path) -> None:
        (directory / "words.json").write_text("[]")

    def load_assets(self: ToyTextEmbedder, directory: Path) -> None:
        self.gain = nn.Parameter(torch.zeros(()))  # a new tensor; load_state_dict fills it

    monkeypatch.setattr(ToyTextEmbedder, "save_assets", save_assets, raising=False)
    monkeypatch.setattr(ToyTextEmbedder, "load_assets", load_assets, raising=False)
    full, cut = interrupted_then_resumed(tmp_path, monkeypatch, text_embedder__joint_training=True)
    assert torch.equal(weights(full, "text_embedder")["gain"], weights(cut, "text_embedder")["gain"])


def test_a_frozen_module_stays_frozen_when_a_resume_rebuilds_its_parameters(tmp_path: Path, monkeypatch) -> None:
    """A module the stage holds frozen (a distilled student's teacher text embedder, joint but built
    frozen) whose ``load_assets`` builds a new parameter (``requires_grad=True``, as ``nn.Parameter``
    and ``nn.Embedding`` make them): the resumed stage's optimizer takes what it took before the kill,
    so the saved optimizer state loads ('parameter group that doesn't match' otherwise), and the
    resumed run ends bit for bit with the frozen weight untouched."""
    from torch import nn

    from modiff.testing.toys import ToyTextEmbedder

    built = ToyTextEmbedder.__init__

    def frozen(self: ToyTextEmbedder, s: Any) -> None:
        built(self, s)
        self.requires_grad_(False)

    def save_assets(self: ToyTextEmbedder, directory: Path) -> None:
        (directory / "words.json").write_text("[]")

    def load_assets(self: ToyTextEmbedder, directory: Path) -> None:
        self.gain = nn.Parameter(torch.zeros(()))  # a new tensor that requires a gradient

    monkeypatch.setattr(ToyTextEmbedder, "__init__", frozen)
    monkeypatch.setattr(ToyTextEmbedder, "save_assets", save_assets, raising=False)
    monkeypatch.setattr(ToyTextEmbedder, "load_assets", load_assets, raising=False)
    full, cut = interrupted_then_resumed(tmp_path, monkeypatch, text_embedder__joint_training=True)
    for role in ("denoiser", "conditioner", "text_embedder"):
        a, b = weights(full, role), weights(cut, role)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (role, k)
    assert weights(cut, "text_embedder")["gain"].item() == 1.0, "the frozen gain was trained"


def test_an_existing_run_needs_resume_or_overwrite(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_run(settings(), run, progress=False)
    with pytest.raises(RunError, match="already exists; continue it with `modiff train .* --resume`"):
        train_run(settings(), run, progress=False)
    with pytest.raises(RunError, match="settings differ.*denoiser.hidden"):
        train_run(settings(denoiser__hidden=4), run, resume=True, progress=False)
    train_run(settings(denoiser__hidden=4), run, overwrite=True, progress=False)
    assert weights(run, "denoiser")["conv_in.weight"].shape[0] == 4


def test_non_finite_loss_stops_naming_step_and_component(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    with pytest.raises(
        NonFiniteLoss, match=r"from step \d+ on \(component: denoiser .toy. from modiff.*last good checkpoint"
    ):
        train_run(
            settings(train__lr=1e30, train__grad_clip=0.0, train__steps=40, train__warmup_steps=0), run, progress=False
        )


def test_generate_same_seed_same_image_and_batch_independent(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_run(settings(), run, progress=False)
    p = Pipeline.load(run.path)
    a = p.generate_tensor(["a red square", "a blue square"], seed=5)
    b = p.generate_tensor(["a red square", "a blue square"], seed=5)
    alone = p.generate_tensor(["a blue square"], seed=6)
    assert a.shape == (2, 3, 8, 8)
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:], alone, rtol=1e-5, atol=1e-6)
    images = p.generate(["a green square"], seed=1)
    assert images[0].size == (8, 8) and images[0].mode == "RGB"


def test_generate_with_another_sampler(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_run(settings(scheduler__plugin="ddim", scheduler__num_train_timesteps=100), run, progress=False)
    p = Pipeline.load(run.path)
    ddpm = p.with_sampler("ddpm")
    assert ddpm.scheduler is not p.scheduler and ddpm.scheduler.num_train_timesteps == 100
    x = ddpm.generate_tensor(["a red square"], seed=0, steps=4)
    y = p.generate_tensor(["a red square"], seed=0, steps=4)
    assert x.shape == y.shape and not torch.equal(x, y)
    with pytest.raises(ModiffError, match="no scheduler plugin named 'eulr'"):
        p.with_sampler("eulr")


def test_corrupt_weights_are_a_clear_error(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_run(settings(), run, progress=False)
    path = run.weights("denoiser")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match=f"{path}.*truncated or corrupt"):
        Pipeline.load(run.path)
    path.write_bytes(b"\x80\x04pickle")
    with pytest.raises(WeightsError, match=str(path)):
        Pipeline.load(run.path)


def test_batches_are_a_pure_function_of_step_and_ranks_split_them() -> None:
    one = batch_indices(0, "denoiser", 7, 8, 20, World.single())
    assert one == batch_indices(0, "denoiser", 7, 8, 20, World.single())
    shares = [batch_indices(0, "denoiser", 7, 8, 20, World(rank=r, size=2)) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(one)
    epoch = [i for s in range(5) for i in batch_indices(1, "x", s, 4, 20, World.single())]
    assert sorted(epoch) == list(range(20)), "one epoch visits every example once"


def test_learning_rate_warms_up_then_decays() -> None:
    s = settings().train
    lrs = [lr_at(i, s.model_copy(update={"steps": 100, "warmup_steps": 10})) for i in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(s.lr)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] >= 0.1 * s.lr * 0.999


@pytest.mark.parametrize("final", [0.0, 0.1, 0.5])
def test_the_decay_ends_at_final_lr(final: float) -> None:
    s = settings().train.model_copy(update={"steps": 101, "warmup_steps": 1, "final_lr": final})
    assert lr_at(101, s) == pytest.approx(final * s.lr, abs=1e-12)  # the schedule's end
    assert lr_at(1, s) == pytest.approx(s.lr)
    assert lr_at(51, s) == pytest.approx((final + (1 - final) / 2) * s.lr)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_final_lr_out_of_range_names_the_key(value: float) -> None:
    from modiff.errors import SettingsError
    from modiff.settings import load_settings

    with pytest.raises(SettingsError, match=r"train\.text_embedder\.final_lr.*" + str(value)):
        load_settings([], [f"train.text_embedder.final_lr={value}"])


def test_evaluate_runs_the_runs_evaluator(tmp_path: Path) -> None:
    from modiff.workflows import evaluate_run

    run = RunDir(tmp_path / "run")
    train_run(settings(), run, progress=False)
    result = evaluate_run(Pipeline.load(run.path, with_data=True))
    assert 0.0 <= result["accuracy"] <= 1.0 and result["prompts"] == 3 and result["seconds"] > 0


def test_channels_last_gives_the_same_images(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    train_run(settings(), run, progress=False)
    plain = Pipeline.load(run.path).generate_tensor(["a red square"], seed=3)
    fast = Pipeline.load(run.path, sets=["run.channels_last=true"])
    assert fast.components.denoiser.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.generate_tensor(["a red square"], seed=3), plain, rtol=1e-4, atol=1e-5)


def test_eval_every_logs_a_learning_curve_without_changing_training(tmp_path: Path) -> None:
    plain = RunDir(tmp_path / "plain")
    train_run(settings(train__steps=6), plain, progress=False)
    curve = RunDir(tmp_path / "curve")
    train_run(settings(train__steps=6, train__eval_every=2), curve, progress=False)
    evals = [m for m in curve.read_metrics() if m.get("kind") == "eval"]
    assert [m["step"] for m in evals] == [2, 4, 6]
    seconds = [m["train_seconds"] for m in evals]
    assert all(s > 0 for s in seconds) and seconds == sorted(seconds)
    assert all(isinstance(m["eval"], dict) and m["eval"] for m in evals)
    for role in ("denoiser", "conditioner"):
        a, b = weights(plain, role), weights(curve, role)
        assert all(torch.equal(a[k], b[k]) for k in a), f"evaluating during training changed the {role}"
    assert curve.read_state()["train_seconds"] == seconds[-1], "the last point is the finished training"


def test_ema_warmup_follows_the_model_early() -> None:
    from modiff.training import EMA

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
    plain, warm = EMA({"m": model}, 0.999), EMA({"m": model}, 0.999, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    plain.update()
    warm.update()
    assert warm.current_decay() == pytest.approx(2 / 11)
    assert float(warm.shadow["m"]["weight"].mean()) == pytest.approx(0.9)  # 1 - 1/10
    assert float(plain.shadow["m"]["weight"].mean()) == pytest.approx(0.001)
    for _ in range(20000):
        warm.updates += 1
    assert warm.current_decay() == 0.999


def test_the_stage_optimiser_is_fused_on_cpu_and_computes_plain_adamws_update() -> None:
    from modiff.training.optim import adamw

    torch.manual_seed(0)
    start = [torch.randn(7, 5), torch.randn(3)]
    fused_params = [torch.nn.Parameter(t.clone()) for t in start]
    plain_params = [torch.nn.Parameter(t.clone()) for t in start]
    fused = adamw(fused_params, lr=1e-2, weight_decay=0.1)
    plain = torch.optim.AdamW(plain_params, lr=1e-2, weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] is True
    # a channels_last weight keeps the plain loop: resumed moments come back contiguous
    conv = torch.nn.Parameter(torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last))
    assert not adamw([conv], lr=1e-2, weight_decay=0.0).defaults["fused"]
    for _ in range(5):
        grads = [torch.randn_like(t) for t in start]
        for params, opt in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b, s in zip(fused_params, plain_params, start):
        assert not torch.equal(a, s)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adam_betas_reach_each_stages_optimiser(tmp_path: Path, monkeypatch) -> None:
    """``adam_betas`` is a setting of every stage, and each stage's AdamW is built with its own."""
    import modiff.training.runner as loop

    built: list[tuple[float, float]] = []
    real = loop.adamw

    def recording(params, **kwargs):  # type: ignore[no-untyped-def]
        opt = real(params, **kwargs)
        built.append(opt.defaults["betas"])
        return opt

    monkeypatch.setattr(loop, "adamw", recording)
    run = RunDir(tmp_path / "run")
    s = settings(encoder__trainable=True, train__adam_betas=[0.9, 0.95], train__encoder__adam_betas=[0.8, 0.99])
    train_run(s, run, progress=False)
    assert built == [(0.8, 0.99), (0.9, 0.95)]  # the encoder stage, then the denoiser's
    assert settings().train.text_embedder.adam_betas == (0.9, 0.999)  # torch's default when not set


@pytest.mark.parametrize("value", ["[0.9, 1.0]", "[-0.1, 0.99]", "[0.9]"])
def test_adam_betas_out_of_range_name_the_key(value: str) -> None:
    from modiff.errors import SettingsError
    from modiff.settings import load_settings

    with pytest.raises(SettingsError, match=r"train\.adam_betas"):
        load_settings([], [f"train.adam_betas={value}"])
