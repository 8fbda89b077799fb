"""The count cache: a repeat count is read back, never wrong, and needs no tokenizer load.

Each count runs in a fresh Python process (the tokenizer and the counts are cached per process),
against the reference: mistral_common's `encode_chat_completion` on real images, as in
test_tokens.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mistral_common.protocol.instruct.chunk import ImageChunk

from cosmos_workflow import tokens

from .conftest import PROMPT_SPECS, REPO
from .test_tokens import (  # noqa: F401 (fixtures)
    PROMPTS,
    frame_image,
    reference_prompt_tokens,
    reference_tokenizer,
)

SIZES = [(1280, 720), (640, 480), (321, 181), (2000, 300)]

# Counts every PROMPTS × SIZES item in this process, with the count cache at argv[1] (and,
# with argv[2], the tokenizer file found there instead of inside mistral-common); prints the
# counts and whether mistral_common's tokenizer (or mistral_common at all) was imported.
COUNT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from cosmos_workflow import tokens
    if len(sys.argv) > 2:
        tokens.tokenizer_path = lambda: Path(sys.argv[2])
    tokens.use_count_cache(sys.argv[1])
    prompts, sizes = json.loads(sys.stdin.read())
    counts = [
        [tokens.count_prompt_tokens(w, h, 2, p).prompt_tokens for w, h in sizes] for p in prompts
    ]
    print(json.dumps({
        "counts": counts,
        "tokenizer_loaded": "mistral_common.tokens.tokenizers.mistral" in sys.modules,
        "mistral_common_imported": "mistral_common" in sys.modules,
    }))
    """
)


def count_in_a_new_process(cache: Path, prompts=PROMPTS, tokenizer: Path | None = None) -> dict:
    argv = [sys.executable, "-c", COUNT, str(cache), *([str(tokenizer)] if tokenizer else [])]
    done = subprocess.run(
        argv,
        input=json.dumps([prompts, SIZES]),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def reference_counts(reference_tokenizer, frame_image):  # noqa: F811
    def image(w, h):
        return ImageChunk(image=frame_image(w, h))

    return [
        [reference_prompt_tokens(reference_tokenizer, [image(w, h)] * 2, p) for w, h in SIZES]
        for p in PROMPTS
    ]


def test_cached_counts_equal_mistral_commons_and_a_repeat_loads_no_tokenizer(
    tmp_path, reference_counts
):
    cache = tmp_path / "cache" / "token-counts.json"
    first = count_in_a_new_process(cache)
    assert first["counts"] == reference_counts
    assert first["tokenizer_loaded"] is True
    stored = json.loads(cache.read_text())
    assert stored["image_rule"] == {"cell_px": 16, "max_image_size": 1024}
    assert len(stored["texts"]) == len({tokens.effective_prompt(p) for p in PROMPTS})
    assert not any(p in cache.read_text() for p in PROMPTS if len(p) > 3)  # hashes, not texts

    repeat = count_in_a_new_process(cache)
    assert repeat["counts"] == reference_counts
    assert repeat["tokenizer_loaded"] is False
    assert repeat["mistral_common_imported"] is False


def test_without_a_count_cache_every_process_loads_the_tokenizer(tmp_path, reference_counts):
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", COUNT.replace("tokens.use_count_cache(sys.argv[1])", ""), "x"],
            input=json.dumps([PROMPTS[:3], SIZES]),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        result = json.loads(done.stdout)
        assert result["tokenizer_loaded"] is True
        assert result["counts"] == reference_counts[:3]
    assert not (tmp_path / "x").exists() and not (REPO / "x").exists()


def test_a_changed_tokenizer_file_or_library_version_invalidates_the_counts(tmp_path):
    tokenizer = tmp_path / "tekken_240911.json"
    shutil.copyfile(tokens.tokenizer_path(), tokenizer)
    cache = tmp_path / "token-counts.json"
    prompts = ["A robot arm picks up a red cube.", ""]
    right = count_in_a_new_process(cache, prompts, tokenizer)["counts"]

    def plant_wrong_counts(**identity) -> None:
        data = json.loads(cache.read_text())
        data["texts"] = {key: 1 for key in data["texts"]}
        data["identity"].update(identity)
        cache.write_text(json.dumps(data))

    # Same identity: the stored counts are what is served (1 text token instead of ~17).
    plant_wrong_counts()
    served = count_in_a_new_process(cache, prompts, tokenizer)
    assert served["tokenizer_loaded"] is False
    assert served["counts"] != right

    # The tokenizer file changes (here: only its mtime): counted again, and stored again.
    plant_wrong_counts()
    stat = tokenizer.stat()
    os.utime(tokenizer, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = count_in_a_new_process(cache, prompts, tokenizer)
    assert again["tokenizer_loaded"] is True
    assert again["counts"] == right
    assert json.loads(cache.read_text())["identity"]["mtime_ns"] == tokenizer.stat().st_mtime_ns

    # Counts stored by another mistral-common version (or cache format) are not used either.
    for identity in ({"mistral_common": "0.0.1"}, {"format": 0}):
        plant_wrong_counts(**identity)
        other = count_in_a_new_process(cache, prompts, tokenizer)
        assert other["tokenizer_loaded"] is True and other["counts"] == right


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\xff not json",
        b'{"identity": ',
        b"[1, 2, 3]",
        b'{"identity": "x", "texts": []}',
        None,  # a well-formed file whose entries have the wrong types
    ],
)
def test_a_corrupt_count_cache_is_ignored_and_replaced(tmp_path, reference_counts, content):
    cache = tmp_path / "token-counts.json"
    count_in_a_new_process(cache, PROMPTS[:2])
    if content is None:
        data = json.loads(cache.read_text())
        data["texts"] = {key: str(n) for key, n in data["texts"].items()}
        data["image_rule"] = {"cell_px": 0, "max_image_size": True}
        content = json.dumps(data).encode()
    cache.write_bytes(content)
    result = count_in_a_new_process(cache, PROMPTS[:2])
    assert result["counts"] == reference_counts[:2]
    assert result["tokenizer_loaded"] is True
    assert count_in_a_new_process(cache, PROMPTS[:2])["tokenizer_loaded"] is False


def test_an_unwritable_count_cache_still_counts(tmp_path, reference_counts):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    for _ in range(2):
        result = count_in_a_new_process(blocker / "token-counts.json", PROMPTS[:2])
        assert result["counts"] == reference_counts[:2]
        assert result["tokenizer_loaded"] is True


def test_the_cache_keeps_the_newest_texts_up_to_its_size(tmp_path, monkeypatch):
    cache = tokens._CountCache(tmp_path / "counts.json")
    monkeypatch.setattr(tokens, "MAX_CACHED_TEXTS", 3)
    for i in range(5):
        cache.remember(text=(f"text {i}", i + 1))
    reread = tokens._CountCache(tmp_path / "counts.json")
    assert [reread.text(f"text {i}") for i in range(5)] == [None, None, 3, 4, 5]


def test_two_processes_writing_one_cache_keep_each_others_counts(tmp_path):
    path = tmp_path / "counts.json"
    one, two = tokens._CountCache(path), tokens._CountCache(path)
    one.text("warm up")  # both read the (missing) file first, like two concurrent checks
    two.text("warm up")
    one.remember(text=("from one", 7))
    two.remember(text=("from two", 9))
    reread = tokens._CountCache(path)
    assert (reread.text("from one"), reread.text("from two")) == (7, 9)


# What the CLI imports: run `cosmos check` in this process, report the modules loaded at exit.
CLI_MODULES = textwrap.dedent(
    """
    import atexit, json, sys
    def report():
        loaded = sorted({m.split(".")[0] for m in sys.modules})
        tokenizer = "mistral_common.tokens.tokenizers.mistral" in sys.modules
        print(json.dumps({"top": loaded, "tokenizer_loaded": tokenizer}), file=sys.stderr)
    atexit.register(report)
    sys.argv = ["cosmos", "check", *sys.argv[1:], "--json"]
    from cosmos_workflow.cli import main
    main()
    """
)


def test_a_repeat_cosmos_check_loads_no_tokenizer_and_no_ssh_library(tmp_path):
    spec = json.loads((PROMPT_SPECS / "office_handover.json").read_text())
    spec["input_video_path"] = os.path.normpath(PROMPT_SPECS / spec["input_video_path"])
    spec["control_inputs"] = {}
    (tmp_path / "one.json").write_text(json.dumps(spec))
    env = {**os.environ, "COSMOS_USER_DIR": str(tmp_path / "user"), "PYTHONPATH": str(REPO)}

    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", CLI_MODULES, str(tmp_path / "one.json")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        modules = json.loads(done.stderr.strip().splitlines()[-1])
        runs.append((json.loads(done.stdout), modules))
    (first, first_modules), (repeat, repeat_modules) = runs
    assert repeat == first
    assert first["data"]["items"][0]["prompt_tokens"] == 2477  # 2 × 1,230 image + 17 text
    assert first_modules["tokenizer_loaded"] is True
    assert repeat_modules["tokenizer_loaded"] is False
    assert "mistral_common" not in repeat_modules["top"]
    assert (tmp_path / "user" / "cache" / "token-counts.json").is_file()
