"""`cosmos report`: one self-contained HTML page per run — frames, prompts and their word diff,
the token bar, cut outputs and errors — with every text escaped.

The runs are real (`cosmos upsample` over the loopback sshd with the stand-in engine, frames
from the real frame cache). Tests marked `browser` load the page in headless Chromium (Debian's
`chromium`): the DOM holds both prompts, every image decodes, data never becomes markup; a
screenshot is kept in $COSMOS_TEST_ARTIFACTS (default: the test's temp folder).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from cosmos_workflow import tokens
from cosmos_workflow.history.report import build_report, esc, word_diff

from .browser import Dom, dump_dom, screenshot
from .history_env import cosmos, data_of, run_record
from .upsample_env import record_of, seed_specs, upsample

REPO = Path(__file__).resolve().parents[1]
HOSTILE = (
    "<script>window.pwned=1</script> a forklift </textarea> by the dock "
    '"><img src=x onerror="window.pwned=2"> & <b>bold</b>'
)


def artifacts(tmp_path: Path) -> Path:
    """Where a test keeps what a person may want to look at (never the checkout)."""
    folder = Path(os.environ.get("COSMOS_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def report_of_a_run(workdir: Path, *specs_args, **prompts) -> tuple[Path, dict]:
    """Run `cosmos upsample` on the seed specs, then `cosmos report latest`; (page, record)."""
    prompts_dir = seed_specs(workdir / "prompts", **prompts)
    record = record_of(upsample(prompts_dir, "--save-dir", workdir / "out", "--json", *specs_args))
    page = workdir / "report.html"
    result = cosmos("report", "latest", "-o", page)
    assert result.exit_code == 0, result.output
    return page, record


# -- the page -----------------------------------------------------------------------------------


def test_report_embeds_frames_prompts_diff_and_token_bar_and_loads_nothing(setup, workdir):
    page, record = report_of_a_run(workdir, office_handover="a forklift by the dock")
    html = page.read_text()
    # Self-contained: every image is a data: URL, nothing else is referenced.
    sources = re.findall(r'\bsrc="([^"]*)"', html)
    assert len(sources) == 4 and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert not re.search(r"\b(href|src)=\"(?!data:)", html)
    # …and a policy that forbids loading anything else.
    assert "default-src &#x27;none&#x27;; img-src data:;" in html
    office = next(i for i in record["items"] if i["name"] == "office_handover")
    # Both prompts, side by side; the stand-in's added words are marked as inserted.
    assert '<div class="prompt original">a forklift by the dock</div>' in html
    assert "<ins>standin upsampled: </ins>a forklift by the dock" in html
    # The token bar's numbers: image + text = the engine's prompt count; output; the context.
    legend = re.search(
        r"image ([\d,]+) · text ([\d,]+) · output ([\d,]+) = ([\d,]+) of max_model_len 4,096", html
    )
    assert legend, html
    numbers = [int(n.replace(",", "")) for n in legend.groups()]
    assert numbers[0] + numbers[1] == office["prompt_tokens_engine"]
    assert numbers[2] == office["generated_tokens"]
    width, height = office["frame_width"], office["frame_height"]
    assert numbers[0] == 2 * tokens.image_tokens_per_frame(width, height) > 0
    assert f"cosmos run 1 · {record['started_at']}" in html
    assert "2 item(s): 2 ok, 0 failed, 0 skipped" in html
    assert esc(record["host"]) in html and "max_model_len" in html


def test_prompts_that_look_like_markup_are_escaped_in_the_page(setup, workdir):
    page, _ = report_of_a_run(workdir, office_handover=HOSTILE)
    html = page.read_text()
    assert "<script>window.pwned" not in html
    assert "</textarea>" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert esc("<script>window.pwned=1</script>") in html
    assert html.count("<script>") == 1  # the page's own


def test_word_diff_marks_removed_and_added_words_and_escapes_them():
    left, right = word_diff("a red <car> parks", "a blue <car> parks\nquietly")
    assert left == "a <del>red </del>&lt;car&gt; parks"
    assert right == "a <ins>blue </ins>&lt;car&gt; parks\n<ins>quietly</ins>"


def test_frames_gone_from_the_cache_are_said(setup, workdir, isolated_user_state):
    prompts_dir = seed_specs(workdir / "prompts")
    record_of(upsample(prompts_dir, "--save-dir", workdir / "out", "--json"))
    shutil.rmtree(isolated_user_state / "cache" / "frames")
    result = cosmos("report", "-o", workdir / "report.html", "--json")
    assert result.exit_code == 0, result.output
    assert data_of(result)["frames_shown"] == 0 and data_of(result)["frames_missing"] == 4
    html = (workdir / "report.html").read_text()
    assert html.count("frames no longer in the cache") == 2
    assert "<img" not in html


def test_cut_output_is_flagged(setup, workdir):
    long_prompt = " ".join(f"word{n}" for n in range(400))  # the stand-in writes 402 words
    page, record = report_of_a_run(workdir, office_handover=long_prompt)
    office = next(i for i in record["items"] if i["name"] == "office_handover")
    assert office["finish_reason"] == "length"
    html = page.read_text()
    assert html.count('<div class="cut">output cut') == 1
    assert 'finish_reason "length"' in html


def test_errors_and_their_hints_are_shown(setup, workdir):
    page, record = report_of_a_run(workdir, "--max-resolution", "source")
    robot = next(i for i in record["items"] if i["name"] == "robot_lab_night")
    assert robot["status"] == "failed"
    html = page.read_text()
    assert f'<div class="error">error ({robot["error"]["code"]}): ' in html
    assert esc(robot["error"]["message"]) in html
    assert f'<div class="hint">hint: {esc(robot["error"]["hint"])}</div>' in html
    assert '<section class="item failed" data-item="robot_lab_night">' in html


def test_report_never_replaces_a_file_that_is_not_a_report(workdir, tmp_path):
    path = tmp_path / "h.db"
    (workdir / "config.toml").write_text(f'[paths]\nhistory_db = "{path}"\n')
    from cosmos_workflow.history import History

    History(path).record_run(run_record({"a": ("x", "y")}))
    precious = workdir / "notes.html"
    precious.write_text("<p>my notes</p>")
    result = cosmos("report", "-o", precious)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"error: {precious} exists and is not a cosmos report: not replaced"
    )
    assert precious.read_text() == "<p>my notes</p>"
    folder = cosmos("report", "-o", workdir)
    assert folder.exit_code == 2 and "is a folder" in folder.stderr
    # A report is replaced by a newer one.
    assert cosmos("report", "-o", workdir / "r.html").exit_code == 0
    assert cosmos("report", "1", "-o", workdir / "r.html").exit_code == 0


def test_report_with_no_history_is_one_error(workdir):
    result = cosmos("report", "-o", workdir / "r.html")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].startswith("error: no runs in the history yet")
    assert not (workdir / "r.html").exists()


def test_build_report_from_a_record_without_frames_or_tokens():
    run = run_record({"a": ("x", None)})
    run["items"][0].update(frame_width=None, prompt_tokens_local=None, prompt_tokens_engine=None)
    page = build_report({**run, "id": 7})
    assert "token counts unknown" in page.html
    assert "no upsampled prompt" in page.html
    assert page.frames_shown == 0 and page.frames_missing == 2


# -- in a real browser --------------------------------------------------------------------------


@pytest.mark.browser
def test_browser_shows_both_prompts_and_decodes_every_frame(setup, workdir, tmp_path):
    page, record = report_of_a_run(workdir, office_handover="a forklift by the loading dock")
    dom = Dom(dump_dom(page))
    body = dom.body()
    assert body["data-ready"] == "1"  # the page's own script ran after load
    assert body["data-images"] == body["data-images-decoded"] == "4"
    originals = dom.text_of("original")
    upsampled = dom.text_of("upsampled")
    for item in record["items"]:
        assert item["original_prompt"] in originals
        assert item["upsampled_prompt"] in upsampled
    shot = screenshot(page, artifacts(tmp_path) / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.browser
def test_browser_markup_in_prompts_stays_text(setup, workdir, tmp_path):
    page, _ = report_of_a_run(workdir, office_handover=HOSTILE)
    dom = Dom(dump_dom(page))
    assert len(dom.tags("script")) == 1  # only the page's own
    assert not dom.tags("textarea") and not dom.tags("b")
    assert all(attrs.get("src", "").startswith("data:image/jpeg") for attrs in dom.tags("img"))
    assert not any("onerror" in attrs for _, attrs in dom.elements)
    assert HOSTILE in dom.text_of("original")
    assert HOSTILE in dom.text_of("upsampled")
    assert dom.body()["data-images-decoded"] == "4"
    screenshot(page, artifacts(tmp_path) / "report-escaping.png")
