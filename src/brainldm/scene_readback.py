"""Read a scene's captioned attributes back from pixels, to check what an image shows.

A reader is a pair of linear discriminant classifiers (Ledoit-Wolf shrinkage) fitted on rendered scenes
(:mod:`brainldm.scenes`), from each image's 8 x 8 grid of mean colours (192 numbers),
to the scene's background colour (6 classes) and to the colour of its dominant object
(8 classes; the first large object, else the first object). :func:`caption_fidelity`
applies it to images the model generates from the captions of held-out scenes: the
rate at which it reads the captioned attribute back from a generated image, next to
the same rate on the scenes' real renderings (the reader's ceiling) and chance (the
most frequent class among the held-out scenes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainldm import scenes

#: Random stream tags (drawn with the model's seed) of the reader's training scenes and
#: of the held-out scenes whose captions are generated from.
_READER_SCENES = 0x7A1E_0005
_PROBE_SCENES = 0x7A1E_0006
ATTRIBUTES = ("background", "object colour")


def dominant_object(scene: scenes.Scene) -> scenes.SceneObject:
    """The scene's first large object, else its first object."""
    return next((o for o in scene.objects if o.size == "large"), scene.objects[0])


def labels(drawn: list[scenes.Scene]) -> dict[str, np.ndarray]:
    """Class indices of each attribute: {name: (n,) int64}."""
    return {
        "background": np.array([list(scenes.BACKGROUNDS).index(s.background) for s in drawn]),
        "object colour": np.array([list(scenes.COLOURS).index(dominant_object(s).colour) for s in drawn]),
    }


def grid_colours(images: np.ndarray, grid: int = 8) -> np.ndarray:
    """Mean colour of each cell of a ``grid`` x ``grid`` grid: images (n, H, W, 3) uint8 -> (n, grid*grid*3) float32 in [0, 1]."""
    n, h, w, _ = images.shape
    x = images[:, : h - h % grid, : w - w % grid].astype(np.float32) / 255.0
    return x.reshape(n, grid, h // grid, grid, w // grid, 3).mean(axis=(2, 4)).reshape(n, -1)


@dataclass
class SceneReader:
    """Fitted readers (sklearn LinearDiscriminantAnalysis) of each attribute from :func:`grid_colours`."""

    models: dict

    def read(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Predicted class indices of each attribute: images (n, H, W, 3) uint8 -> {name: (n,)}."""
        feats = grid_colours(images)
        return {name: model.predict(feats) for name, model in self.models.items()}


def fit_reader(seed: int, n: int = 3000, size: int = 64) -> SceneReader:
    """A :class:`SceneReader` fitted on ``n`` scenes rendered at ``size`` px, drawn from ``seed``."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng([seed, _READER_SCENES])
    drawn = [scenes.random_scene(rng) for _ in range(n)]
    feats = grid_colours(np.stack([scenes.render(s, size) for s in drawn]))
    return SceneReader({name: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(feats, y)
                        for name, y in labels(drawn).items()})


def caption_fidelity(pipe, seed: int, n: int = 64, steps: int = 20, guidance_scale: float = 5.0,
                     size: int = 64, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """How often the attribute a held-out scene's caption states is read back from the image generated from it.

    pipe: an img2img pipeline (:func:`brainldm.models.load_pipeline`); images are
    generated text-to-image (``steps`` DDIM steps, ``guidance_scale``) from the first
    caption of each of ``n`` held-out scenes drawn from ``seed``, with a generator
    seeded by ``seed``. Returns {attribute: {"generated", "real", "chance"}} rates in [0, 1]:
    read back from the generated images, from the scenes' real renderings, and the
    most frequent class's share.
    """
    import torch

    from brainldm.models import text_to_image

    rng = np.random.default_rng([seed, _PROBE_SCENES])
    drawn = [scenes.random_scene(rng) for _ in range(n)]
    prompts = [scenes.captions(s, rng, 1)[0] for s in drawn]
    t2i = text_to_image(pipe)
    generator = torch.Generator(pipe.device).manual_seed(seed)
    generated = []
    for i in range(0, n, batch_size):
        out = t2i(prompts[i:i + batch_size], height=size, width=size, num_inference_steps=steps,
                  guidance_scale=guidance_scale, generator=generator, output_type="np")
        generated.append(np.round(out.images * 255).astype(np.uint8))
    generated = np.concatenate(generated)
    real = np.stack([scenes.render(s, size) for s in drawn])
    reader = fit_reader(seed, size=size)
    truth = labels(drawn)
    got, ceiling = reader.read(generated), reader.read(real)
    return {
        name: {
            "generated": float(np.mean(got[name] == y)),
            "real": float(np.mean(ceiling[name] == y)),
            "chance": float(np.bincount(y).max() / n),
        }
        for name, y in truth.items()
    }
