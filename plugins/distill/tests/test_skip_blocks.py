"""``[denoiser] skip_blocks``: a smaller student, the teacher's denoiser with
named blocks passed through, checked on a toy network shaped like a UNet (a
residual block, a concatenated skip, a resolution change)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import modiff
from modiff_distill.student import PassThrough, skip_blocks

KEY = "[denoiser] skip_blocks"


class Residual(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)

    def forward(self, x: Tensor, scale: float) -> Tensor:
        return x[:, : self.conv.out_channels] + scale * self.conv(x)


class Toy(nn.Module):
    """down -> middle -> up, the up layer taking the down layer's output appended as a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.down = Residual(4, 4)
        self.shrink = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.middle = Residual(4, 4)
        self.grow = nn.Upsample(scale_factor=2)
        self.up = nn.ModuleList([Residual(8, 4)])

    def forward(self, x: Tensor) -> Tensor:
        skip = self.down(x, 1.0)
        h = self.grow(self.middle(self.shrink(skip), 1.0))
        return self.up[0](torch.cat([h, skip], dim=1), 1.0)


def probe(network: nn.Module) -> None:
    network(torch.zeros(1, 4, 8, 8))


def test_a_skipped_block_passes_its_input_on_and_its_weights_leave_the_network() -> None:
    torch.manual_seed(0)
    toy, x = Toy(), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        skip = toy.down(x, 1.0)
        without_middle = toy.up[0](torch.cat([toy.grow(toy.shrink(skip)), skip], dim=1), 1.0)
    skip_blocks(toy, ["middle"], probe, KEY)
    assert isinstance(toy.middle, PassThrough) and not any(k.startswith("middle.") for k in toy.state_dict())
    torch.testing.assert_close(toy(x), without_middle, rtol=0, atol=0)

    reference, toy = Toy(), Toy()
    toy.load_state_dict(reference.state_dict())
    skip_blocks(toy, ["up.0"], probe, KEY)  # a layer inside a ModuleList: it passes h on, the skip is dropped
    with torch.no_grad():
        expected_up = reference.grow(reference.middle(reference.shrink(reference.down(x, 1.0)), 1.0))
    assert isinstance(toy.up[0], PassThrough) and toy.up[0].channels == 4
    torch.testing.assert_close(toy(x), expected_up, rtol=0, atol=0)


def test_no_names_leave_the_network_as_it_is() -> None:
    toy = Toy()
    before = {k: v.clone() for k, v in toy.state_dict().items()}
    skip_blocks(toy, [], lambda network: pytest.fail("probed for nothing"), KEY)
    assert toy.state_dict().keys() == before.keys()


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (["mid_block"], ["no block named 'mid_block'", "middle", "up.0"]),
        (["shrink"], ["'shrink' cannot be skipped", "[4, 8, 8] into [4, 4, 4]"]),
        (["grow"], ["'grow' cannot be skipped"]),
        (["up", "up.0"], ["'up.0' lies inside another skipped block"]),
    ],
)
def test_a_block_that_is_not_there_or_cannot_pass_its_input_on_is_a_clear_error(names: list[str],
                                                                                 words: list[str]) -> None:
    toy = Toy()
    before = {k: v.clone() for k, v in toy.state_dict().items()}
    with pytest.raises(modiff.SettingsError) as caught:
        skip_blocks(toy, names, probe, KEY)
    message = str(caught.value)
    assert message.startswith(KEY) and all(w in message for w in words), message
    assert toy.state_dict().keys() == before.keys(), "a refused list changed the network"
