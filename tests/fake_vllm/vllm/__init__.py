"""Stand-in for vLLM, for the worker's fast tests only (never a product path).

Put `tests/fake_vllm` first on PYTHONPATH and `import vllm` gets this module. It offers what the
worker uses (`LLM`, `SamplingParams`, `__version__`) with vLLM's shapes: `LLM.chat` takes a list
of conversations and returns one RequestOutput-like object per conversation
(`prompt_token_ids`, `outputs[0].text / token_ids / finish_reason`). Like vLLM it validates the
whole call first and rejects it if any request is too long or carries an image it cannot read.

Token counts follow Pixtral's image rule (fit in 1024 px, then ceil(h/16) * (ceil(w/16) + 1));
text is estimated (one token per 4 UTF-8 bytes). Only the real-engine tests check exact counts.

Controls (environment variables):
  FAKE_VLLM_LOG         file to append JSON lines to: {"event": "load", "kwargs": ...} per LLM();
                        {"event": "generate", "call": n, "prompt": ..., "parts": [part types],
                        "image_sha256": [...]} per item generated (call numbers the chat calls);
                        {"event": "reject", "call": n, "prompts": [...], "error": ...} per
                        rejected call
  FAKE_VLLM_DELAY_S     seconds to sleep per generated item
  FAKE_VLLM_FAIL_LOAD   LLM() raises RuntimeError with this message
  FAKE_VLLM_EXIT_AFTER  the process dies (os._exit(137)) when asked for item N+1
  FAKE_VLLM_DEAD_AFTER  chat() raises EngineDeadError when asked for item N+1
  FAKE_VLLM_HOLD_FILE   while this file exists and holds a number N, item N+1 and later wait
                        (tests hold the worker mid-job, then delete the file to let it go on)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import struct
import time

__version__ = "0.0-standin"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_IMAGE_PX = 1024
_PATCH_PX = 16
_CHAT_FRAME_TOKENS = 3  # BOS, [INST], [/INST]


class VLLMValidationError(ValueError):
    """Like vllm.exceptions.VLLMValidationError: the request cannot be served as sent."""


class EngineDeadError(RuntimeError):
    """Like vllm.v1.engine.exceptions.EngineDeadError."""


class SamplingParams:
    def __init__(self, temperature=1.0, max_tokens=16, seed=None, **kwargs):
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.extra = kwargs


class CompletionOutput:
    def __init__(self, text, token_ids, finish_reason):
        self.index = 0
        self.text = text
        self.token_ids = token_ids
        self.finish_reason = finish_reason


class RequestOutput:
    def __init__(self, request_id, prompt_token_ids, outputs):
        self.request_id = request_id
        self.prompt = None
        self.prompt_token_ids = prompt_token_ids
        self.outputs = outputs
        self.finished = True


def _log(event: dict) -> None:
    path = os.environ.get("FAKE_VLLM_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, ensure_ascii=False) + "\n")


def _wait_while_held(items_served: int) -> None:
    path = os.environ.get("FAKE_VLLM_HOLD_FILE")
    while path:
        try:
            with open(path, encoding="utf-8") as f:
                hold_from = int(f.read().strip() or 0)
        except FileNotFoundError:
            return
        if items_served < hold_from:
            return
        time.sleep(0.02)


def _decode_image(url: str) -> bytes:
    prefix, _, data = url.partition(",")
    if not prefix.startswith("data:image/") or ";base64" not in prefix:
        raise VLLMValidationError(f"unsupported image URL: {url[:40]!r}")
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error as e:
        raise VLLMValidationError(f"invalid base64 image: {e}") from e
    if not raw.startswith(_PNG_SIGNATURE) or len(raw) < 24:
        raise VLLMValidationError("cannot identify image file")
    return raw


def _png_size(raw: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


def _url_prefixes(parts: list) -> list:
    return [p["image_url"]["url"].partition(",")[0] for p in parts if p["type"] == "image_url"]


def _image_tokens(width: int, height: int) -> int:
    ratio = max(width / _MAX_IMAGE_PX, height / _MAX_IMAGE_PX)
    if ratio > 1:
        width, height = round(width / ratio), round(height / ratio)
    return math.ceil(height / _PATCH_PX) * (math.ceil(width / _PATCH_PX) + 1)


class LLM:
    def __init__(self, model, tokenizer_mode="auto", max_model_len=None, max_num_seqs=256, **kw):
        kwargs = dict(kw, model=model, tokenizer_mode=tokenizer_mode)
        kwargs.update(max_model_len=max_model_len, max_num_seqs=max_num_seqs)
        _log({"event": "load", "kwargs": kwargs, "pid": os.getpid()})
        if os.environ.get("FAKE_VLLM_FAIL_LOAD"):
            raise RuntimeError(os.environ["FAKE_VLLM_FAIL_LOAD"])
        if not os.path.isfile(os.path.join(model, "params.json")):
            raise ValueError(f"Invalid repository ID or local directory specified: {model!r}")
        self.max_model_len = max_model_len or 131072
        self.image_limit = (kw.get("limit_mm_per_prompt") or {}).get("image", 1)
        self.items_served = 0
        self.calls = 0

    def _prompt(self, conversation) -> tuple[str, int]:
        """(text, prompt token count) of a one-message conversation; raises like vLLM."""
        (message,) = conversation
        texts, images = [], []
        for part in message["content"]:
            if part["type"] == "text":
                texts.append(part["text"])
            elif part["type"] == "image_url":
                images.append(_png_size(_decode_image(part["image_url"]["url"])))
        if len(images) > self.image_limit:
            raise VLLMValidationError(
                f"At most {self.image_limit} image(s) may be provided in one prompt."
            )
        text = "".join(texts)
        tokens = _CHAT_FRAME_TOKENS + len(text.encode("utf-8")) // 4 + 1
        tokens += sum(_image_tokens(w, h) for w, h in images)
        if tokens > self.max_model_len:
            raise VLLMValidationError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"your prompt contains {tokens} input tokens. Please reduce the length of the "
                "input prompt."
            )
        return text, tokens

    def chat(self, messages, sampling_params=None, use_tqdm=True, **kwargs):
        sampling_params = sampling_params or SamplingParams()
        conversations = messages if isinstance(messages[0], list) else [messages]
        self.calls += 1
        try:
            prompts = [self._prompt(conv) for conv in conversations]
        except Exception as e:
            texts = [part.get("text") for conv in conversations for part in conv[0]["content"]]
            texts = [t for t in texts if t is not None]
            _log({"event": "reject", "call": self.calls, "prompts": texts, "error": str(e)})
            raise
        outputs = []
        for n, (text, prompt_tokens) in enumerate(prompts):
            if self.items_served == int(os.environ.get("FAKE_VLLM_EXIT_AFTER", -1)):
                os._exit(137)
            if self.items_served == int(os.environ.get("FAKE_VLLM_DEAD_AFTER", -1)):
                raise EngineDeadError("EngineCore encountered an issue. See stack trace above.")
            _wait_while_held(self.items_served)
            time.sleep(float(os.environ.get("FAKE_VLLM_DELAY_S", 0)))
            self.items_served += 1
            parts = conversations[n][0]["content"]
            image_sha256 = [
                hashlib.sha256(_decode_image(p["image_url"]["url"])).hexdigest()
                for p in parts
                if p["type"] == "image_url"
            ]
            event = {"event": "generate", "call": self.calls, "prompt": text}
            event.update(parts=[p["type"] for p in parts], image_sha256=image_sha256)
            sp = sampling_params
            event["sampling"] = {"temperature": sp.temperature, "max_tokens": sp.max_tokens}
            event["sampling"]["seed"] = sp.seed
            _log(dict(event, url_prefixes=_url_prefixes(parts), pid=os.getpid()))
            room = min(sampling_params.max_tokens, self.max_model_len - prompt_tokens)
            words = ("standin upsampled: " + text).split(" ")
            finish_reason = "length" if len(words) > room else "stop"
            words = words[:room]
            completion = CompletionOutput(" ".join(words), list(range(len(words))), finish_reason)
            outputs.append(RequestOutput(str(n), list(range(prompt_tokens)), [completion]))
        return outputs
