"""Images on stable-diffusion.cpp: txt2img, img2img and inpainting for SD 1.x/2.x/XL/3 and Flux.

The library keeps its progress/preview/log callbacks in process-wide C globals and has no way to
stop a running sampler, so: every call passes fresh callbacks (a stale one is a dangling pointer),
one generation runs at a time, and cancellation takes effect between images.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from runtime.engines.base import ImageParams
from runtime.errors import EngineError, InvalidRequestError, StackletError
from runtime.spec import ModelSpec

log = logging.getLogger("stacklet.diffusion")

# stable-diffusion.cpp log levels: 0 debug, 1 info, 2 warn, 3 error
_LOG_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.WARNING, 3: logging.ERROR}
_QUALITY_STEPS = {"low": 0.5, "medium": 1.0, "standard": 1.0, "auto": 1.0, "high": 1.5, "hd": 1.5}
_COMPANIONS = {"vae": "vae_path", "taesd": "taesd_path", "clip_l": "clip_l_path", "clip_g": "clip_g_path",
               "t5xxl": "t5xxl_path"}


@dataclass(frozen=True)
class Family:
    """Size limits and sampling defaults of one model family."""

    name: str
    default_size: int
    min_side: int
    max_side: int
    multiple: int
    steps: int
    cfg_scale: float

    def check_size(self, width: int, height: int) -> None:
        for side in (width, height):
            if not (self.min_side <= side <= self.max_side and side % self.multiple == 0):
                raise InvalidRequestError(
                    f"Invalid value for 'size': {width}x{height} is not supported by this {self.name} model. "
                    f"Width and height must be multiples of {self.multiple} between {self.min_side} and "
                    f"{self.max_side}, or 'auto' ({self.default_size}x{self.default_size}).",
                    param="size", code="invalid_value")

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The nearest allowed size to an input image's size (edits with size=auto)."""
        scale = min(1.0, self.max_side / max(width, height))
        scale = max(scale, self.min_side / min(width, height))

        def side(value: int) -> int:
            rounded = round(value * scale / self.multiple) * self.multiple
            return min(self.max_side, max(self.min_side, rounded))

        return side(width), side(height)


FAMILIES = {
    "sd1": Family("sd1", 512, 256, 1024, 64, 20, 7.0),
    "sd2": Family("sd2", 768, 256, 1536, 64, 20, 7.0),
    "sdxl": Family("sdxl", 1024, 512, 2048, 64, 25, 7.0),
    "sd3": Family("sd3", 1024, 512, 2048, 64, 28, 4.5),
    "flux": Family("flux", 1024, 256, 2048, 16, 20, 1.0),
    "unknown": Family("unknown", 512, 256, 2048, 64, 20, 7.0),
}


def model_family(spec: ModelSpec) -> str:
    """The family stored at pull time, else read from the checkpoint's tensor names now."""
    family = spec.metadata.get("family")
    if not family:
        from runtime.store.metadata import describe

        try:
            family = describe({"model": [spec.files["model"]]})[1].get("family")
        except StackletError as exc:
            log.warning("cannot tell the family of %s: %s", spec.files["model"].name, exc.message)
    return family or "unknown"


class DiffusionEngine:
    capabilities = frozenset({"images", "image_edits"})

    def __init__(self, spec: ModelSpec) -> None:
        import stable_diffusion_cpp as sd_cpp
        from stable_diffusion_cpp import StableDiffusion
        from stable_diffusion_cpp.stable_diffusion import SAMPLE_METHOD_MAP, SCHEDULER_MAP

        self.spec = spec
        self._samplers = sorted(k for k, v in SAMPLE_METHOD_MAP.items() if v is not None and "count" not in k)
        self._schedulers = sorted(k for k, v in SCHEDULER_MAP.items() if v is not None and "count" not in k)
        family = model_family(spec)
        if family in ("taesd", "vae"):  # stable-diffusion.cpp crashes on these instead of failing
            raise EngineError(f"{spec.files['model'].name} is a {family.upper()} decoder, not a diffusion "
                              "checkpoint. Pull the checkpoint and add the decoder with --file.")
        self.family = FAMILIES.get(family, FAMILIES["unknown"])
        self.defaults = self._defaults(spec.metadata)
        options = spec.options
        self._vae_tiling = bool(options.vae_tiling)
        self._threads = options.threads or sd_cpp.sd_get_num_physical_cores()
        self._lock = threading.Lock()
        self._log_callback = sd_cpp.sd_log_callback(_forward_log)  # kept referenced: C holds the pointer
        sd_cpp.sd_set_log_callback(self._log_callback, None)
        paths = {arg: str(spec.files[role]) for role, arg in _COMPANIONS.items() if role in spec.files}
        try:
            # verbose=True: the quiet mode swaps process-wide stdout/stderr fds while the server runs
            self._sd = StableDiffusion(
                model_path=str(spec.files["model"]), **paths, n_threads=self._threads,
                keep_clip_on_cpu=bool(options.clip_on_cpu), keep_vae_on_cpu=bool(options.vae_on_cpu),
                flash_attn=options.flash_attn == "on", verbose=True)
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineError(f"Cannot load {spec.name}: {exc}") from exc
        logging.getLogger("stable-diffusion-cpp-python").setLevel(logging.CRITICAL)

    def _defaults(self, meta: dict[str, Any]) -> ImageParams:
        size = str(meta.get("size") or f"{self.family.default_size}x{self.family.default_size}")
        width, _, height = size.partition("x")
        return ImageParams(prompt="", width=int(width), height=int(height),
                           steps=int(meta.get("steps") or self.family.steps),
                           cfg_scale=float(meta.get("cfg_scale") or self.family.cfg_scale),
                           sampler=meta.get("sampler"), scheduler=meta.get("scheduler"))

    def resolve(self, params: ImageParams) -> ImageParams:
        """Fill in the model's defaults and check the request against the family's limits."""
        width, height = params.width, params.height
        if width is None or height is None:
            if params.init_images:
                width, height = self.family.fit(*params.init_images[0].size)
            else:
                width, height = self.defaults.width, self.defaults.height
        else:
            self.family.check_size(width, height)
        steps = params.steps or max(1, round(self.defaults.steps * _QUALITY_STEPS.get(params.quality, 1.0)))
        sampler = _choice("sampler", params.sampler or self.defaults.sampler, self._samplers)
        scheduler = _choice("scheduler", params.scheduler or self.defaults.scheduler, self._schedulers)
        strength = params.strength if params.strength is not None else (1.0 if params.mask is not None else 0.75)
        seed = params.seed if params.seed is not None else random.randrange(2**31)
        cfg_scale = params.cfg_scale if params.cfg_scale is not None else self.defaults.cfg_scale
        return replace(params, width=width, height=height, steps=steps, sampler=sampler, scheduler=scheduler,
                       strength=strength, seed=seed, cfg_scale=cfg_scale)

    def generate_images(self, params: ImageParams, cancel: threading.Event,
                        on_preview: Callable[[int, Any], None] | None = None) -> Iterator[Any]:
        params = self.resolve(params)
        size = (params.width, params.height)
        init, refs, mask = None, [], None
        if params.init_images:
            init = params.init_images[0].convert("RGB").resize(size)
            refs = [image.convert("RGB") for image in params.init_images[1:]]
        if params.mask is not None:
            mask = params.mask.convert("L").resize(size)
        for index in range(params.n):
            if cancel.is_set():
                return
            preview = _preview_handler(index, size, on_preview)
            with self._lock:
                try:
                    images = self._sd.generate_image(
                        prompt=params.prompt, negative_prompt=params.negative_prompt, init_image=init,
                        ref_images=refs, mask_image=mask, width=params.width, height=params.height,
                        cfg_scale=params.cfg_scale, sample_method=params.sampler or "default",
                        scheduler=params.scheduler or "default", sample_steps=params.steps,
                        strength=params.strength, seed=params.seed + index, vae_tiling=self._vae_tiling,
                        preview_method="proj" if on_preview and params.previews else "none",
                        preview_interval=max(1, params.steps // max(1, params.previews)),
                        preview_callback=preview, progress_callback=_ignore_progress)
                except (ValueError, RuntimeError) as exc:
                    raise EngineError(f"Image generation failed: {exc}") from exc
            if not images:
                raise EngineError("Image generation failed: the engine returned no image.")
            image = images[0].convert("RGB")
            yield image if mask is None else _keep_unmasked(image, init, mask)

    def info(self) -> dict[str, Any]:
        d = self.defaults
        return {"family": self.family.name, "default_size": f"{d.width}x{d.height}", "steps": d.steps,
                "cfg_scale": d.cfg_scale, "sampler": d.sampler or "default", "scheduler": d.scheduler or "default",
                "size_limits": {"min": self.family.min_side, "max": self.family.max_side,
                                "multiple": self.family.multiple},
                "threads": self._threads, "options": self.spec.options.as_dict()}

    def close(self) -> None:
        self._sd.close()


def _keep_unmasked(generated: Any, original: Any, mask: Any) -> Any:
    """The original where the mask keeps it: samplers repaint the whole image, and OpenAI edits only where the
    mask is transparent (white here). The edge is feathered so the repainted area blends in."""
    from PIL import Image, ImageFilter

    radius = max(1, min(mask.size) // 128)
    return Image.composite(generated, original, mask.filter(ImageFilter.GaussianBlur(radius)))


def _choice(param: str, value: str | None, allowed: list[str]) -> str | None:
    if value is None or value == "default" or value in allowed:
        return None if value == "default" else value
    raise InvalidRequestError(f"Invalid value for '{param}': '{value}'. Supported values are: {', '.join(allowed)}.",
                              param=param, code="invalid_value")


def _preview_handler(index: int, size: tuple[int, int], on_preview: Callable[[int, Any], None] | None):
    def handle(step: int, frames: list[Any], is_noisy: bool) -> None:
        if on_preview and frames:
            # latent projections come at 1/8 scale: show them at the requested size
            on_preview(index, frames[0].convert("RGB").resize(size))

    return handle


def _ignore_progress(step: int, steps: int, seconds: float) -> None:
    """Passed on every call only so the library replaces the previous call's (freed) callback."""


def _forward_log(level: int, text: bytes, _data: Any) -> None:
    log.log(_LOG_LEVELS.get(level, logging.INFO), "%s", text.decode("utf-8", "replace").rstrip())
