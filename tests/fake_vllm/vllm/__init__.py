"""Stand-in for vLLM, for the worker's fast tests only (never a product path).

Put `tests/fake_vllm` first on PYTHONPATH and `import vllm` gets this module. It offers what the
worker uses (`LLM`, `SamplingParams`, `__version__`) with vLLM's shapes: `LLM.chat` takes a list
of conversations, adds them one by one as requests numbered by `LLM.request_counter`, rejects
the call if one is too long or carries an image it cannot read, and otherwise runs every queued
request (`LLM._run_engine`) and returns one RequestOutput-like object per request, sorted by
request id (`prompt_token_ids`, `outputs[0].text / token_ids / finish_reason`).

Behaviour profiles (FAKE_VLLM_PROFILE), after what the real versions do (see shared/ENGINE.md and
the engine matrix in the README):
  0.32 (default)  a too-long prompt raises VLLMValidationError (prompt > max_model_len); a
                  rejected call leaves nothing queued; a dead engine raises EngineDeadError.
  0.9             plain ValueError (prompt > max_model_len); the requests added before the bad
                  one stay queued, and the next chat() returns their outputs too (vLLM issue
                  26081); EngineDeadError exists; importing vllm registers the "aimv2" config
                  with transformers' AutoConfig (tests/fake_transformers has it already).
  0.8             like 0.9, but rejects at prompt >= max_model_len, and has no EngineDeadError: a
                  dead engine hangs the caller for good (its client's kill of its own process
                  group is ignored by a container's PID 1).

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
  FAKE_VLLM_FAIL_CORE   LLM() prints this line as the engine process's last traceback line, then
                        raises V1's "Engine core initialization failed. See root cause above."
  FAKE_VLLM_EXIT_AFTER  the process dies (os._exit(137)) when asked for item N+1
  FAKE_VLLM_DEAD_AFTER  chat() raises EngineDeadError when asked for item N+1 (0.8: hangs)
  FAKE_VLLM_PROFILE     0.32 | 0.9 | 0.8 (above)
  FAKE_VLLM_REJECT_PROMPT  a request whose prompt text contains this string is rejected
                        (as one the engine cannot serve)
  FAKE_VLLM_SILENT_PROMPT  for a prompt containing this string the model writes no text
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

PROFILE = os.environ.get("FAKE_VLLM_PROFILE", "0.32")
if PROFILE not in ("0.32", "0.9", "0.8"):
    raise ImportError(f"FAKE_VLLM_PROFILE={PROFILE!r}: the stand-in knows 0.32, 0.9 and 0.8")
__version__ = "0.0-standin" if PROFILE == "0.32" else f"{PROFILE}.0-standin"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_IMAGE_PX = 1024
_PATCH_PX = 16
_CHAT_FRAME_TOKENS = 3  # BOS, [INST], [/INST]


class VLLMValidationError(ValueError):
    """Like vllm.exceptions.VLLMValidationError: the request cannot be served as sent."""


class EngineDeadError(RuntimeError):
    """Like vllm.v1.engine.exceptions.EngineDeadError (0.9 and later)."""


class _AIMv2Config:
    """What vLLM 0.9's transformers_utils/configs registers under "aimv2"."""


if PROFILE == "0.9":
    try:
        from transformers import AutoConfig
    except ImportError:
        pass
    else:
        AutoConfig.register("aimv2", _AIMv2Config)


class Counter:
    """vllm.utils.Counter: LLM numbers its requests with one."""

    def __init__(self) -> None:
        self.counter = 0

    def __next__(self) -> int:
        n = self.counter
        self.counter += 1
        return n


class _Engine:
    """LLM.llm_engine: the queue of requests added and not yet run."""

    def __init__(self) -> None:
        self.queue: dict[str, tuple] = {}

    def abort_request(self, request_ids) -> None:
        for request_id in [request_ids] if isinstance(request_ids, str) else request_ids:
            self.queue.pop(request_id, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.queue)


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


def _too_long(tokens: int, max_model_len: int) -> Exception | None:
    """The error each profile raises for a prompt of `tokens`, or None when it is accepted."""
    if PROFILE == "0.32":
        if tokens > max_model_len:
            return VLLMValidationError(
                f"This model's maximum context length is {max_model_len} tokens. However, "
                f"your prompt contains {tokens} input tokens. Please reduce the length of the "
                "input prompt."
            )
        return None
    if tokens > max_model_len or (PROFILE == "0.8" and tokens >= max_model_len):
        return ValueError(
            f"The decoder prompt (length {tokens}) is longer than the maximum model length of "
            f"{max_model_len}. Make sure that `max_model_len` is no smaller than the number of "
            "text tokens plus multimodal tokens."
        )
    return None


_InvalidRequest = VLLMValidationError if PROFILE == "0.32" else ValueError


class LLM:
    def __init__(self, model, tokenizer_mode="auto", max_model_len=None, max_num_seqs=256, **kw):
        kwargs = dict(kw, model=model, tokenizer_mode=tokenizer_mode)
        kwargs.update(max_model_len=max_model_len, max_num_seqs=max_num_seqs)
        _log({"event": "load", "kwargs": kwargs, "pid": os.getpid()})
        if os.environ.get("FAKE_VLLM_FAIL_LOAD"):
            raise RuntimeError(os.environ["FAKE_VLLM_FAIL_LOAD"])
        if os.environ.get("FAKE_VLLM_FAIL_CORE"):  # V1: the engine process prints, client raises
            print(
                f"ERROR [core.py:1] EngineCore failed to start.\nTraceback (most recent call "
                f'last):\n  File "core.py", line 1\n{os.environ["FAKE_VLLM_FAIL_CORE"]}',
                flush=True,
            )
            raise RuntimeError(
                "Engine core initialization failed. See root cause above. "
                "Failed core proc(s): {'EngineCore_0': 1}"
            )
        if not os.path.isfile(os.path.join(model, "params.json")):
            raise ValueError(f"Invalid repository ID or local directory specified: {model!r}")
        self.max_model_len = max_model_len or 131072
        self.image_limit = (kw.get("limit_mm_per_prompt") or {}).get("image", 1)
        self.items_served = 0
        self.calls = 0
        self.request_counter = Counter()
        self.llm_engine = _Engine()

    def _prompt(self, conversation) -> tuple[str, int]:
        """(text, prompt token count) of a one-message conversation; raises like vLLM."""
        (message,) = conversation
        texts, images = [], []
        for part in message["content"]:
            if part["type"] == "text":
                texts.append(part["text"])
            elif part["type"] == "image_url":
                try:
                    images.append(_png_size(_decode_image(part["image_url"]["url"])))
                except VLLMValidationError as e:
                    raise _InvalidRequest(str(e)) from None
        if len(images) > self.image_limit:
            raise _InvalidRequest(
                f"At most {self.image_limit} image(s) may be provided in one prompt."
            )
        text = "".join(texts)
        reject = os.environ.get("FAKE_VLLM_REJECT_PROMPT")
        if reject and reject in text:
            raise _InvalidRequest(f"prompt rejected (contains {reject!r})")
        tokens = _CHAT_FRAME_TOKENS + len(text.encode("utf-8")) // 4 + 1
        tokens += sum(_image_tokens(w, h) for w, h in images)
        error = _too_long(tokens, self.max_model_len)
        if error is not None:
            raise error
        return text, tokens

    def chat(self, messages, sampling_params=None, use_tqdm=True, **kwargs):
        sampling_params = sampling_params or SamplingParams()
        conversations = messages if isinstance(messages[0], list) else [messages]
        self.calls += 1
        added = []
        for conv in conversations:
            try:
                prepared = self._prompt(conv)
            except Exception as e:
                texts = [part.get("text") for c in conversations for part in c[0]["content"]]
                texts = [t for t in texts if t is not None]
                _log({"event": "reject", "call": self.calls, "prompts": texts, "error": str(e)})
                if PROFILE == "0.32":  # fixed upstream (PR 27420): a rejected call leaves nothing
                    self.llm_engine.abort_request(added)
                raise
            request_id = str(next(self.request_counter))
            self.llm_engine.queue[request_id] = (conv, prepared, sampling_params)
            added.append(request_id)
        return self._run_engine(use_tqdm=use_tqdm)

    def _run_engine(self, *, use_tqdm=True):
        """Run every queued request (leftovers of a rejected call included), by request id."""
        outputs = []
        while self.llm_engine.queue:
            request_id = next(iter(self.llm_engine.queue))
            conv, (text, prompt_tokens), sampling_params = self.llm_engine.queue.pop(request_id)
            outputs.append(self._generate(request_id, conv, text, prompt_tokens, sampling_params))
        return sorted(outputs, key=lambda o: int(o.request_id))

    def _generate(self, request_id, conv, text, prompt_tokens, sampling_params):
        if self.items_served == int(os.environ.get("FAKE_VLLM_EXIT_AFTER", -1)):
            os._exit(137)
        if self.items_served == int(os.environ.get("FAKE_VLLM_DEAD_AFTER", -1)):
            if PROFILE == "0.8":  # no EngineDeadError: the client waits for a dead engine forever
                while True:
                    time.sleep(3600)
            raise EngineDeadError("EngineCore encountered an issue. See stack trace above.")
        _wait_while_held(self.items_served)
        time.sleep(float(os.environ.get("FAKE_VLLM_DELAY_S", 0)))
        self.items_served += 1
        parts = conv[0]["content"]
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
        silent = os.environ.get("FAKE_VLLM_SILENT_PROMPT")
        if silent and silent in text:  # only special tokens: no text at all
            words = [""] * min(5, room)
        finish_reason = "length" if len(words) > room else "stop"
        words = words[:room]
        completion = CompletionOutput(" ".join(words), list(range(len(words))), finish_reason)
        return RequestOutput(request_id, list(range(prompt_tokens)), [completion])
