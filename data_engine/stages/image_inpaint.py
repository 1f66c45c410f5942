"""Image inpaint stage: remove the object from a still image with Stable Diffusion inpainting, and finish the sample.

Reads `key`, `frames` uint8 [1, H, W, 3] (the photo), `mask` uint8 [1, H, W] (its matte); optional `captions`,
`source_id`, `scores`. Writes `clip` (the finished image sample: fg = the photo over mid-grey, alpha = the matte,
bg = the photo with the object's region filled, blend = the photo: it is the true composite, which a
recomposition over an estimated background would not be, as in compose) and `scores["image_inpaint"]`, and drops
the pixel fields it consumed. It is the image path's compose: the rows of an image-matting set's photos without a
background come here (data_engine/sources/image_matting.py); clips go to the inpaint stage (ProPainter).

Around the diffusers `StableDiffusionInpaintPipeline` (data_engine/stages/sd_inpaint.py):
- the hole is every pixel the matte touches (any alpha > 0 carries object colour), dilated by `dilate_px`
  (mattes end where the object's shadow and colour spill do not);
- the image is scaled down to at most `max_side` (the release was trained at 512 px; larger inputs grow the cost
  with the pixels and drift from what it learnt) and padded to a multiple of the VAE's 8x downsampling
  (reflection), then the fill is scaled back;
- pixels outside the dilated hole are pasted back from the input, so they are exactly the input.
The noise is seeded per image from `seed`, so an image's background does not depend on the batch it ran in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_engine.schema import LayeredClip
from data_engine.stages.base import Resources, Row, Stage, StageError
from data_engine.stages.compose import composed_clip
from data_engine.stages.masks import dilate
from data_engine.stages.models import check_preset, device_for
from data_engine.stages.sd_inpaint import DTYPES, SD_INPAINT_WEIGHTS, build_sd_inpaint

VAE_STRIDE = 8  # the release's VAE downsamples 8x; the pipeline needs sides that are multiples of it


@dataclass(frozen=True)
class ImageInpaintOptions:
    preset: str = "full"
    dilate_px: int = 8
    max_side: int = 512
    steps: int = 25
    guidance_scale: float = 7.5
    prompt: str = "an empty background, nothing in front"
    # Large holes invite the model to paint a new object where the old one was.
    negative_prompt: str = "person, animal, object, foreground, text, watermark"
    dtype: str = "float16"
    seed: int = 0

    def __post_init__(self) -> None:
        check_preset(self.preset)
        if self.dtype not in DTYPES:
            raise ValueError(f"image_inpaint dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.max_side < VAE_STRIDE or self.dilate_px < 0 or self.steps < 1:
            raise ValueError(f"image_inpaint needs max_side >= {VAE_STRIDE}, dilate_px >= 0 and steps >= 1")


class ImageInpaintStage(Stage):
    name = "image_inpaint"
    default_resources = Resources(num_cpus=1.0, num_gpus=0.25, batch_size=1, retries=1)
    Options = ImageInpaintOptions
    reads = frozenset({"key", "frames", "mask"})
    writes = frozenset({"clip", "scores"})
    CONSUMED = ("frames", "mask")

    @classmethod
    def weights(cls, opts: ImageInpaintOptions) -> tuple[str, ...]:
        return () if opts.preset == "tiny" else (SD_INPAINT_WEIGHTS,)

    def setup(self) -> None:
        self.device = device_for(self.resources.num_gpus)
        self.pipe = build_sd_inpaint(self.opts.preset, self.opts.dtype, self.opts.seed).to(self.device)

    def _run(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """The pipeline on uint8 [h, w, 3] + bool [h, w] (sides multiples of 8) -> float [h, w, 3] in 0..255."""
        import torch
        from PIL import Image

        h, w = hole.shape
        generator = torch.Generator(self.device).manual_seed(self.opts.seed)
        with torch.inference_mode():
            out = self.pipe(prompt=self.opts.prompt, negative_prompt=self.opts.negative_prompt,
                            image=Image.fromarray(image), mask_image=Image.fromarray(hole.astype(np.uint8) * 255),
                            height=h, width=w, num_inference_steps=self.opts.steps,
                            guidance_scale=self.opts.guidance_scale, generator=generator, output_type="np").images[0]
        if not np.isfinite(out).all():
            raise StageError("image_inpaint: the inpainting model produced non-finite pixels")
        return out * 255.0

    def inpaint(self, image: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bg uint8 [H, W, 3], the dilated hole bool [H, W]) of one image and its matte."""
        import cv2

        h, w = alpha.shape
        hole = dilate((alpha > 0)[None], self.opts.dilate_px)[0]
        scale = min(1.0, self.opts.max_side / max(h, w))
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        small = image if scale == 1.0 else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        small_hole = hole if scale == 1.0 else cv2.resize(hole.astype(np.uint8), (sw, sh),
                                                          interpolation=cv2.INTER_NEAREST) > 0
        ph, pw = -sh % VAE_STRIDE, -sw % VAE_STRIDE
        padded = np.pad(small, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        padded_hole = np.pad(small_hole, ((0, ph), (0, pw)), mode="reflect")
        filled = self._run(padded, padded_hole)[:sh, :sw]
        if scale != 1.0:
            filled = cv2.resize(filled.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        bg = np.where(hole[..., None], np.clip(np.rint(filled), 0, 255).astype(np.uint8), image)
        return bg, hole

    def finish(self, row: Row, bg: np.ndarray, info: dict) -> LayeredClip:
        return composed_clip(row, row["mask"], bg, fps=float(row.get("fps", 1.0)), kind="image", origin="image",
                             scores={**row.get("scores", {}), "image_inpaint": info})

    def process_batch(self, rows: list[Row]) -> list[Row]:
        out = []
        for row in rows:
            frames, mask = row.get("frames"), row.get("mask")
            if (frames is None or mask is None or frames.ndim != 4 or len(frames) != 1 or frames.shape[-1] != 3
                    or mask.shape != frames.shape[:3] or frames.dtype != np.uint8 or mask.dtype != np.uint8):
                got = "nothing" if frames is None or mask is None else (
                    f"frames {frames.dtype} {list(frames.shape)}, mask {mask.dtype} {list(mask.shape)}")
                out.append(self.failed(row, StageError(
                    f"image_inpaint needs one uint8 image [1, H, W, 3] and its uint8 matte [1, H, W] (clips go to "
                    f"the inpaint stage), got {got}")))
                continue
            try:
                bg, hole = self.inpaint(frames[0], mask[0])
            except StageError as exc:
                out.append(self.failed(row, exc))
                continue
            info = {"preset": self.opts.preset, "dilate_px": self.opts.dilate_px, "hole_area": float(hole.mean()),
                    "steps": self.opts.steps, "seed": self.opts.seed}
            clip = self.finish(row, bg[None], info)
            rest = {k: v for k, v in row.items() if k not in self.CONSUMED}
            out.append({**rest, "clip": clip, "scores": clip.scores})
        return out
