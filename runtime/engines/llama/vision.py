"""Image input through llama.cpp's multimodal library (mtmd): the model's mmproj turns each image
into embeddings, which enter the generation loop as part of a sequence's prompt.

In a prompt an image is a run of placeholder token ids, one per embedding: negative numbers taken
from a hash of the image's pixels. The KV ledger and the host cache match prompts by token ids, so
they reuse an image's cells only for the same image, and its tokens count like any other in the
context check and in usage.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as ll
import llama_cpp.mtmd_cpp as mtmd
import numpy as np

from runtime.errors import EngineError, InvalidRequestError

PLACEHOLDER_SPACE = 2**62  # placeholder ids are -1 .. -2**62, far from any vocabulary


@dataclass(frozen=True)
class ImageSpan:
    """An image's embeddings at `start` in a prompt: prompt[start:end] are its placeholder ids."""

    start: int
    embeddings: Any  # float32 array, one row per image token
    non_causal: bool  # decoded in one piece with attention both ways (Gemma 3)

    @property
    def end(self) -> int:
        return self.start + len(self.embeddings)


@dataclass(frozen=True)
class EncodedImage:
    ids: list[int]
    embeddings: Any
    non_causal: bool


class Vision:
    """The mmproj's encoder; one image at a time (the mtmd context is not shared between threads)."""

    def __init__(self, mmproj: Path, model: Any, threads: int) -> None:
        from llama_cpp._logger import llama_log_callback  # llama-cpp-python's filter (batch.py sets its level)

        mtmd.mtmd_log_set(llama_log_callback, None)  # else mtmd logs every load step and every image
        params = mtmd.mtmd_context_params_default()
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False
        self._ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, params)
        if not self._ctx:
            raise EngineError(f"llama.cpp could not load the projector {mmproj.name}.")
        if not mtmd.mtmd_support_vision(self._ctx) or mtmd.mtmd_decode_use_mrope(self._ctx):
            mtmd.mtmd_free(self._ctx)
            self._ctx = None
            raise EngineError(f"{mmproj.name} is not a vision projector this engine runs (audio projectors "
                              "and M-RoPE models such as Qwen2-VL are not supported).")
        self._marker = mtmd.mtmd_default_marker()
        self._width = ll.llama_model_n_embd_inp(model)  # the projector's output: text-model input embeddings
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._ctx:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None

    def encode(self, image: Any) -> list[list[int] | EncodedImage]:
        """A PIL RGB image as the model reads it: text tokens the projector wraps it in, and its embeddings."""
        width, height = image.size
        pixels = image.tobytes()
        digest = hashlib.sha256(b"%d,%d," % (width, height) + pixels).digest()
        base = int.from_bytes(digest[:8], "little")
        buffer = (ctypes.c_uint8 * len(pixels)).from_buffer_copy(pixels)
        with self._lock:
            bitmap = mtmd.mtmd_bitmap_init(width, height, buffer)
            chunks = mtmd.mtmd_input_chunks_init()
            try:
                text = mtmd.mtmd_input_text(self._marker, len(self._marker), False, True)
                bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
                if mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
                    raise InvalidRequestError("The model's projector could not read this image.", param="messages")
                return [self._chunk(mtmd.mtmd_input_chunks_get(chunks, i), base)
                        for i in range(mtmd.mtmd_input_chunks_size(chunks))]
            finally:
                mtmd.mtmd_input_chunks_free(chunks)
                mtmd.mtmd_bitmap_free(bitmap)

    def _chunk(self, chunk: Any, base: int) -> list[int] | EncodedImage:
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            count = ctypes.c_size_t()
            tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            return [tokens[i] for i in range(count.value)]
        if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
            raise InvalidRequestError("This model's projector takes images only.", param="messages")
        if mtmd.mtmd_encode_chunk(self._ctx, chunk) != 0:
            raise EngineError("llama.cpp failed to encode the image.")
        n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        output = mtmd.mtmd_get_output_embd(self._ctx)
        rows = np.ctypeslib.as_array(output, shape=(n_tokens, self._width)).copy()
        ids = [-1 - (base + i) % PLACEHOLDER_SPACE for i in range(n_tokens)]
        return EncodedImage(ids, rows, bool(mtmd.mtmd_decode_use_non_causal(self._ctx, chunk)))


def image_prompt(vision: Vision, tokenize: Any, text: str, marker: str,
                 images: list[Any]) -> tuple[list[int], list[ImageSpan]]:
    """Tokens for `text` with each `marker` replaced by the next image, and where the images sit.
    `tokenize(text, add_special)` tokenizes the text between them."""
    pieces = text.split(marker)
    if len(pieces) != len(images) + 1:
        raise InvalidRequestError(f"The chat template kept {len(pieces) - 1} of the {len(images)} images: it "
                                  "drops or repeats content. Send the images in user messages.", param="messages")
    tokens = tokenize(pieces[0], True)
    spans = []
    for image, piece in zip(images, pieces[1:], strict=True):
        for item in vision.encode(image):
            if isinstance(item, EncodedImage):
                spans.append(ImageSpan(len(tokens), item.embeddings, item.non_causal))
                tokens += item.ids
            else:
                tokens += item
        tokens += tokenize(piece, False)
    if spans and spans[-1].end == len(tokens):
        raise InvalidRequestError("The prompt ends with an image; add text after it.", param="messages")
    return tokens, spans

