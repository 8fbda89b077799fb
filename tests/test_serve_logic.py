"""The warm server's pure logic, without an engine: vLLM flags per version, metrics and idle
time, the request body, the answer → result (usage check), status parsing, docker's command line,
and the API key staying out of everything printed."""

from __future__ import annotations

import importlib.util
import json
import shlex
import time
from dataclasses import asdict

import pytest

from cosmos_workflow.config import load_config
from cosmos_workflow.remote import protocol, servectl
from cosmos_workflow.remote import runner as runners
from cosmos_workflow.remote.protocol import EngineSettings
from cosmos_workflow.remote.tunnel import Target, shown_url
from cosmos_workflow.specs import PromptSpec
from cosmos_workflow.workflows import serve_ops, server
from cosmos_workflow.workflows.jobs import PlannedItem

from .engine import WORKER


@pytest.fixture(scope="module")
def worker():
    spec = importlib.util.spec_from_file_location("cosmos_worker_under_test", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENGINE = EngineSettings(max_model_len=4096, output_tokens=300, frame_count=2)


def _settings(worker, **changes):
    return worker.complete_settings({**asdict(ENGINE), **changes}, "request.json")


def test_server_flags_are_the_batch_engine_kwargs(worker):
    settings = _settings(worker, enforce_eager=True)
    kwargs = worker.engine_kwargs("/m", settings)
    args = worker.server_args(kwargs, "0.32.0")
    # Every engine keyword the batch job passes to vllm.LLM is a flag of the same name.
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        assert flag in args, flag
        if not isinstance(value, bool):
            assert args[args.index(flag) + 1] == (
                str(value) if key != "limit_mm_per_prompt" else '{"image":2}'
            )
    assert args[args.index("--tokenizer-mode") + 1] == "mistral"


def test_image_limit_flag_format_follows_the_vllm_version(worker):
    kwargs = worker.engine_kwargs("/m", _settings(worker, frame_count=3))

    def limit(version):
        args = worker.server_args(kwargs, version)
        return args[args.index("--limit-mm-per-prompt") + 1]

    assert limit("0.8.1") == "image=3"  # 0.8.1 reads only KEY=VALUE
    assert limit("0.8.5+cpu") == "image=3"
    assert limit("0.9.2") == '{"image":3}'
    assert limit("0.32.0") == '{"image":3}'


def test_false_booleans_are_the_defaults_or_the_no_flag(worker):
    kwargs = worker.engine_kwargs("/m", _settings(worker, enable_prefix_caching=False))
    args = worker.server_args(kwargs, "0.32.0")
    assert "--no-enable-prefix-caching" in args and "--enable-prefix-caching" not in args
    assert "--enforce-eager" not in args


def test_server_command_binds_loopback_and_reads_frames_from_the_cache(worker):
    argv = worker.server_command("/m", _settings(worker), 8765, "/r/cache", "0.32.0")
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "8765"
    assert argv[argv.index("--allowed-local-media-path") + 1] == "/r/cache"


METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 4.0
"""


def test_metrics_are_summed_over_labels(worker):
    assert worker.parse_metrics(METRICS) == {"served": 7, "busy": 3}
    assert worker.parse_metrics("") == {"served": None, "busy": None}


def test_idle_clock_counts_from_the_last_request(worker):
    clock = worker.IdleClock(now=100.0)
    clock.observe({"served": 5, "busy": 0}, now=110.0)  # first reading: a baseline
    assert clock.idle_s(120.0) == 20.0
    clock.observe({"served": 5, "busy": 1}, now=130.0)  # a request running
    assert clock.idle_s(140.0) == 10.0
    clock.observe({"served": 6, "busy": 0}, now=150.0)  # it finished
    clock.observe({"served": 6, "busy": 0}, now=160.0)  # nothing since
    assert clock.idle_s(170.0) == 20.0


def test_port_in_use_is_named(worker):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert f"port {port} on the host is already in use" in worker.port_problem(port, 0)


def test_port_a_stopped_server_left_in_time_wait_is_free(worker):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end waits in TIME_WAIT on `port`
    client.close()
    listener.close()
    # Only closed connections hold it: a restart waits for them instead of refusing.
    assert worker.listening_on(port) is False
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with listener:
        assert worker.listening_on(listener.getsockname()[1]) is True


def _item(prompt="a cat", tokens=523) -> PlannedItem:
    item = PlannedItem(
        id="x",
        spec=PromptSpec(id="ps_1", name="x", prompt=prompt, path=None, format="cosmos"),
        output_name="x",
    )
    item.prompt_tokens_local = tokens
    return item


def _answer(prompt_tokens=523, text=" a long prompt ", finish="length"):
    return {
        "choices": [{"message": {"content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 300},
    }


def test_request_is_the_workers_message_with_max_tokens(worker):
    messages = server.build_messages(["file:///c/a.png", "file:///c/b.png"], "  ")
    conversation = worker.build_conversation([b"a", b"b"], "  ")
    assert [p["type"] for p in messages[0]["content"]] == [
        p["type"] for p in conversation[0]["content"]
    ]
    assert messages[0]["content"][-1] == conversation[0]["content"][-1]  # default prompt
    body = server.chat_request("m", messages, ENGINE)
    assert body["max_tokens"] == 300 and body["temperature"] == 0.6
    assert "seed" not in body


def test_answer_becomes_a_worker_result():
    result = server.result_from_response(_item(), 200, _answer(), time.monotonic())
    assert result.pop("elapsed_s") >= 0
    assert result == {
        "id": "x",
        "text": "a long prompt",
        "prompt_tokens": 523,
        "generated_tokens": 300,
        "finish_reason": "length",
        "error": None,
    }
    # The results.jsonl shape: the pipeline collects it like a worker's line.
    line = protocol.result_line(
        "x", elapsed_s=0.0, **{k: v for k, v in result.items() if k != "id"}
    )
    assert set(json.loads(line)) == set(result) | {"elapsed_s"}


def test_prompt_tokens_other_than_the_preflight_fail_the_item():
    result = server.result_from_response(
        _item(tokens=523), 200, _answer(prompt_tokens=524), time.monotonic()
    )
    assert result["error"]["type"] == protocol.TOKEN_MISMATCH
    assert "524" in result["error"]["message"] and "523" in result["error"]["message"]
    assert result["text"] is None


def test_rejected_and_empty_answers_are_item_errors():
    rejected = server.result_from_response(
        _item(),
        400,
        {"object": "error", "message": "This model's maximum context length…"},
        time.monotonic(),
    )
    assert rejected["error"]["type"] == protocol.SERVER_REJECTED
    assert "HTTP 400: This model's maximum context length" in rejected["error"]["message"]
    empty = server.result_from_response(_item(), 200, _answer(text="  "), time.monotonic())
    assert empty["error"]["type"] == "EmptyOutput"


def _probe(state: dict | None, alive: bool) -> str:
    lines = [servectl.STATE_PREFIX + json.dumps(state)] if state is not None else []
    return "\n".join([*lines, servectl.ALIVE_PREFIX + ("yes" if alive else "no")])


def test_status_of_a_dead_supervisor_is_failed_not_ready():
    wanted = protocol.server_settings(ENGINE)
    state = {"state": "ready", "settings": wanted, "port": 1}
    assert serve_ops.parse_probe(_probe(state, True), wanted, None).usable
    dead = serve_ops.parse_probe(_probe(state, False), wanted, None)
    assert dead.state == "failed" and not dead.usable and "gone" in dead.error
    assert serve_ops.parse_probe(_probe(None, False), wanted, None).state == "stopped"


def test_other_settings_are_listed_and_make_the_server_unusable():
    wanted = protocol.server_settings(ENGINE)
    running = dict(wanted, max_model_len=8192)
    status = serve_ops.parse_probe(
        _probe({"state": "ready", "settings": running}, True), wanted, None
    )
    assert status.differences == ["max_model_len: server 8192, this run 4096"]
    assert not status.usable
    mode, why, _ = server.choose_mode(None, lambda: status)
    assert mode == "job" and "max_model_len: server 8192" in why


def test_docker_server_is_a_named_init_container_on_the_host_network():
    settings = runners.RunnerSettings(kind="docker", remote_dir="/home/u/ct1")
    words = shlex.split(runners.server_command(settings))
    words = words[words.index("docker") :]
    assert words[words.index("--name") + 1] == runners.server_container(settings)
    # One per checkout: two users' servers on one shared host do not clash on the name.
    other = runners.RunnerSettings(kind="docker", remote_dir="/home/v/ct1")
    assert runners.server_container(other) != runners.server_container(settings)
    assert "--init" in words and "--rm" in words
    assert words[words.index("--network") + 1] == "host"
    assert "-p" not in words and "--publish" not in words
    assert words[-3:] == [
        "/workspace/cosmos_workflow/worker.py",
        "serve",
        "/workspace/cosmos_workflow/server",
    ]


def test_direct_server_runs_worker_serve_on_the_server_folder():
    settings = runners.RunnerSettings(kind="direct", remote_dir="/home/u/ct 1", python="py -X")
    command = runners.server_command(settings)
    assert command.startswith("cd '/home/u/ct 1' && exec ")
    assert shlex.split(command)[-2:] == ["serve", "/home/u/ct 1/cosmos_workflow/server"]


def test_api_key_is_never_config_nor_shown(monkeypatch, tmp_path):
    monkeypatch.setenv("COSMOS_SERVER_API_KEY", "sk-secret-123")
    config = load_config(cwd=tmp_path)  # not an unknown [server] key
    assert "sk-secret-123" not in json.dumps(config.as_rows(), default=str)
    assert server.api_key() == "sk-secret-123"
    target = Target.for_url("http://gpu:8000", server.api_key())
    assert target.base_path == "/v1"
    assert "sk-secret-123" not in repr(target) and "sk-secret-123" not in str(target)


def test_endpoint_must_be_an_http_url():
    with pytest.raises(ValueError):
        Target.for_url("gpu:8000")
    assert Target.for_url("https://h/api/v1/").base_path == "/api/v1"


def test_file_url_probe_tries_the_hosts_mistral_common(worker, tmp_path, monkeypatch):
    assert worker.reads_file_urls(str(tmp_path)) is True  # mistral-common 1.13 reads file://
    assert list(tmp_path.iterdir()) == []  # its probe image is removed
    # A mistral_common that refuses the URL (as 1.5.x does): frames go inline.
    monkeypatch.setattr(worker, "_FILE_URL_PROBE", "raise RuntimeError('Unsupported image url')")
    assert worker.reads_file_urls(str(tmp_path)) is False


def test_an_endpoint_is_shown_and_recorded_without_credentials(tmp_path):
    url = "https://user:s3cret@gpu.example:8443/v1?api_key=s3cret"
    assert shown_url(url) == "https://gpu.example:8443/v1"
    assert shown_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
    choice = server.ModeChoice(None, use_server=None, endpoint=url, journal_dir=tmp_path)
    assert choice.mode == "server"
    assert "s3cret" not in choice.command("0123456789abcdef")
    # --no-server wins over an endpoint from the config.
    forced = server.ModeChoice(None, use_server=False, endpoint=url, journal_dir=tmp_path)
    assert forced.mode == "job"
