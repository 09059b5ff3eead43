"""How fast the shapes world draws and the prompt-accuracy checker reads.

``python plugins/datasets/benchmarks/speed.py`` prints a table: examples per
second (scene + render + tensor), captions per second (the corpus), checker
milliseconds per image, and the checker's verdict on clean, blurred and noisy
renders (the fraction read as correct), at 32, 64 and 128 px.
"""

from __future__ import annotations

import time

import numpy as np

from modiff_datasets.config import ShapesSettings
from modiff_datasets.evaluation import check_image
from modiff_datasets.shapes import render
from modiff_datasets.shapes.dataset import ShapesDataset


def _blur(rgb: np.ndarray) -> np.ndarray:
    p = np.pad(rgb.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    n = rgb.shape[0]
    return sum(p[i : i + n, j : j + n] for i in range(3) for j in range(3)) / 9.0


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0, 255).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(0)
    header = ("px", 4), ("examples/s", 11), ("captions/s", 11), ("check ms", 9), ("clean", 6), ("blur", 6)
    print(" ".join(f"{name:>{w}}" for name, w in header), f"{'blur+noise10':>13}")
    for n in (32, 64, 128):
        d = ShapesDataset(ShapesSettings(image_size=n, max_objects=2, size=100_000))
        t = time.perf_counter()
        for i in range(3000):
            d[i]
        ex_s = 3000 / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(10000):
            d.sampler.caption(i)
        cap_s = 10000 / (time.perf_counter() - t)
        scenes = [d.scene(i) for i in range(400)]
        images = [render(s.objects, n)[0] for s in scenes]
        t = time.perf_counter()
        clean = np.mean([check_image(im, s.objects).correct for im, s in zip(images, scenes)])
        ms = (time.perf_counter() - t) / len(images) * 1e3
        def verdicts(noise: float, images=images, scenes=scenes) -> float:  # type: ignore[no-untyped-def]
            return float(
                np.mean(
                    [
                        check_image(_to_uint8(_blur(im) + rng.normal(0, noise, im.shape)), s.objects).correct
                        for im, s in zip(images, scenes)
                    ]
                )
            )

        blur, noisy = verdicts(0.0), verdicts(10.0)
        print(f"{n:>4} {ex_s:>11.0f} {cap_s:>11.0f} {ms:>9.2f} {clean:>6.3f} {blur:>6.3f} {noisy:>13.3f}")


if __name__ == "__main__":
    main()
