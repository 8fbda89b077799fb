"""The SSH connection against a real OpenSSH sshd on 127.0.0.1 (fixtures: tests/sshd.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from cosmos_workflow.config import SCHEMA, load_config
from cosmos_workflow.errors import HostKeyError, RemoteCommandError, SSHError
from cosmos_workflow.remote.base import ShellCommand
from cosmos_workflow.remote.ssh import Connection, HostSettings, host_key_fingerprint, trust_host
from cosmos_workflow.workflows import WorkflowOrchestrator

pytestmark = pytest.mark.ssh


def one_line(error: Exception) -> bool:
    return "\n" not in str(error) and "\n" not in (getattr(error, "hint", "") or "")


# --- host keys --------------------------------------------------------------------------------


def test_unknown_host_key_is_refused(sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    conn = Connection(sshd.settings(known_hosts=known_hosts))
    with pytest.raises(HostKeyError) as caught:
        conn.connect()
    error = caught.value
    assert error.code == "host_key_unknown"
    assert sshd.known_hosts_name in error.message
    assert sshd.host_key_fingerprint in error.message
    assert "cosmos remote trust" in error.hint and "accept-new" in error.hint
    assert one_line(error)
    assert not known_hosts.exists()  # strict records nothing
    assert not conn.is_connected


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_changed_host_key_is_refused_even_with_accept_new(sshd, changed_known_hosts, policy):
    before = changed_known_hosts.read_bytes()
    conn = Connection(sshd.settings(known_hosts=changed_known_hosts, host_key_policy=policy))
    with pytest.raises(HostKeyError) as caught:
        conn.connect()
    assert caught.value.code == "host_key_changed"
    assert "CHANGED" in caught.value.message
    assert sshd.host_key_fingerprint in caught.value.message
    assert "ssh-keygen -R" in caught.value.hint
    assert one_line(caught.value)
    assert changed_known_hosts.read_bytes() == before
    assert conn.counters.connect == 0


def test_trust_refuses_a_changed_key_and_keeps_known_hosts(sshd, changed_known_hosts):
    before = changed_known_hosts.read_bytes()
    with pytest.raises(HostKeyError) as caught:
        trust_host(sshd.settings(known_hosts=changed_known_hosts))
    assert caught.value.code == "host_key_changed"
    assert changed_known_hosts.read_bytes() == before


def test_accept_new_records_key(sshd, tmp_path):
    known_hosts = tmp_path / "ssh" / "known_hosts"
    with Connection(sshd.settings(known_hosts=known_hosts, host_key_policy="accept-new")) as c:
        assert c.run(["true"]).exit_code == 0
    name, key_type, key_b64 = known_hosts.read_text().split()
    assert name == f"[127.0.0.1]:{sshd.port}"
    assert [key_type, key_b64] == sshd.host_pub_fields()
    # Recorded once, then checked: a strict connection now succeeds.
    with Connection(sshd.settings(known_hosts=known_hosts)) as c:
        c.connect()
    assert len(known_hosts.read_text().splitlines()) == 1


def test_trust_host_records_fingerprint_matching_ssh_keygen(sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("# my hosts\nexample.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")  # no \n
    # No login happens: a user the server does not know, and no key, still get the key.
    settings = sshd.settings(known_hosts=known_hosts, user="nobody-here", ssh_key=None)
    seen = host_key_fingerprint(settings)
    assert (seen.fingerprint_sha256, seen.recorded, seen.known) == (
        sshd.host_key_fingerprint,
        False,
        False,
    )
    info = trust_host(settings)
    assert info.host == f"[127.0.0.1]:{sshd.port}"
    assert info.key_type == "ssh-ed25519"
    assert info.fingerprint_sha256 == sshd.host_key_fingerprint
    assert info.recorded and not info.known
    lines = known_hosts.read_text().splitlines()
    assert lines[:2] == ["# my hosts", "example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"]
    # OpenSSH itself finds the entry we wrote.
    found = subprocess.run(
        ["ssh-keygen", "-F", info.host, "-f", str(known_hosts)], capture_output=True, text=True
    )
    assert found.returncode == 0 and sshd.host_pub_fields()[1] in found.stdout
    again = trust_host(settings)
    assert (again.recorded, again.known) == (False, True)
    assert len(known_hosts.read_text().splitlines()) == 3
    with Connection(sshd.settings(known_hosts=known_hosts)) as conn:
        assert conn.run(["true"]).ok


# --- connecting -------------------------------------------------------------------------------


def test_connection_is_lazy_and_keeps_one_session(sshd):
    conn = Connection(sshd.settings())
    assert not conn.is_connected and conn.counters.connect == 0
    with conn:
        conn.run(["true"])
        conn.run(["true"])
        conn.listdir("/")
        assert conn.is_connected
        sftp = conn.sftp
        assert conn.sftp is sftp
    assert not conn.is_connected
    conn.close()  # twice is fine
    assert conn.counters.as_dict() == {"exec": 2, "sftp": 1, "connect": 1}


def test_ssh_config_alias_resolves_hostname_port_user_and_key(sshd, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host gpu-box\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key}\n"
    )
    settings = sshd.settings(host="gpu-box", port=None, user=None, ssh_key=None, ssh_config=config)
    with Connection(settings) as conn:
        assert (conn.host.hostname, conn.host.port, conn.host.user) == (
            "127.0.0.1",
            sshd.port,
            sshd.user,
        )
        assert conn.host.key_files == (sshd.key,)
        assert conn.run(["id", "-un"]).stdout.strip() == sshd.user


def test_missing_key_file_is_a_clear_error(sshd, tmp_path):
    conn = Connection(sshd.settings(ssh_key=tmp_path / "no_such_key"))
    with pytest.raises(SSHError) as caught:
        conn.connect()
    assert caught.value.code == "ssh_key_missing"
    assert "no_such_key" in caught.value.message and one_line(caught.value)
    assert conn.counters.connect == 0


def test_key_readable_by_others_is_refused_with_chmod_hint(sshd, tmp_path):
    key = tmp_path / "id_loose"
    shutil.copyfile(sshd.key, key)
    key.chmod(0o644)
    with pytest.raises(SSHError) as caught:
        Connection(sshd.settings(ssh_key=key)).connect()
    assert caught.value.code == "ssh_key_permissions"
    assert "0644" in caught.value.message
    assert caught.value.hint == f"run: chmod 600 {key}"


def test_key_not_authorized_is_auth_failed(sshd, tmp_path):
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(SSHError) as caught:
        Connection(sshd.settings(ssh_key=stranger)).connect()
    assert caught.value.code == "auth_failed"
    assert str(stranger) in caught.value.message and one_line(caught.value)


def test_connection_refused_on_a_closed_port_fails_fast(sshd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(SSHError) as caught:
        Connection(sshd.settings(port=closed_port)).connect()
    assert caught.value.code == "connection_refused"
    assert f"127.0.0.1:{closed_port}" in caught.value.message
    assert time.monotonic() - start < 2


def test_port_that_never_speaks_ssh_times_out(sshd):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts; nobody ever sends a banner
        start = time.monotonic()
        with pytest.raises(SSHError) as caught:
            Connection(sshd.settings(port=silent.getsockname()[1], connect_timeout_s=0.5)).connect()
    assert caught.value.code == "connect_timeout"
    assert time.monotonic() - start < 3


def test_connect_timeout_has_one_default_the_configs(workdir):
    (workdir / "config.toml").write_text("[remote]\nhost = 'gpu-box'\n")
    default = SCHEMA["remote"]["connect_timeout_s"].default
    assert WorkflowOrchestrator(load_config()).gpu_host.host_settings().connect_timeout_s == default
    with pytest.raises(TypeError, match="connect_timeout_s"):
        HostSettings("gpu-box")  # no second, differing default in the ssh module


def test_configured_connect_timeout_is_what_the_connection_waits(workdir):
    (workdir / "config.toml").write_text("[remote]\nhost = '127.0.0.1'\nconnect_timeout_s = 0.5\n")
    settings = WorkflowOrchestrator(load_config()).gpu_host.host_settings()
    assert settings.connect_timeout_s == 0.5
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts; nobody ever sends a banner
        settings = replace(settings, port=silent.getsockname()[1])
        start = time.monotonic()
        with pytest.raises(SSHError) as caught:
            Connection(settings).connect()
    assert caught.value.code == "connect_timeout"
    assert "within 0.5 s" in caught.value.message
    assert time.monotonic() - start < 3


def test_unresolvable_host_is_a_dns_error(sshd):
    with pytest.raises(SSHError) as caught:
        Connection(sshd.settings(host="no-such-host.invalid")).connect()
    assert caught.value.code == "dns"
    assert "no-such-host.invalid" in caught.value.message


# --- running commands -------------------------------------------------------------------------


def test_run_returns_a_record(sshd):
    with Connection(sshd.settings()) as conn:
        result = conn.run(["sh", "-c", "echo out; echo err >&2"])
    assert result.command == "sh -c 'echo out; echo err >&2'"
    assert (result.exit_code, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert result.duration_s > 0
    assert conn.counters.exec == 1


def test_run_streams_lines_in_order_while_running(connection, tmp_path):
    seen = []
    gate = tmp_path / "gate"

    def on_line(stream):
        def seen_line(line: str) -> None:
            seen.append((stream, line))
            if line == "one":
                gate.touch()  # the command goes on only once "one" reached us

        return seen_line

    # The command waits (up to 20 s) for the gate that only a streamed "one" opens: had the
    # output been delivered when the command ended, it would say "not streamed".
    wait = f"i=0; while [ ! -e {gate} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done"
    script = f"echo one; echo warn >&2; {wait}; [ -e {gate} ] || echo 'not streamed'; "
    script += "printf 'two\\nthree'"
    result = connection.run(
        ["sh", "-c", script], on_stdout=on_line("out"), on_stderr=on_line("err")
    )
    out_lines = [line for stream, line in seen if stream == "out"]
    assert out_lines == ["one", "two", "three"]  # the last line has no newline, still delivered
    assert [line for stream, line in seen if stream == "err"] == ["warn"]
    assert result.stdout == "one\ntwo\nthree"


def test_nonzero_exit_raises_with_the_stderr_tail(connection):
    script = "for i in 1 2 3 4 5; do echo problem-$i >&2; done; exit 3"
    with pytest.raises(RemoteCommandError) as caught:
        connection.run(["sh", "-c", script])
    error = caught.value
    assert error.result.exit_code == 3
    assert "exited with code 3" in error.message
    assert "problem-5" in error.message and "problem-3" in error.message
    assert "problem-2" not in error.message
    assert one_line(error)
    unchecked = connection.run(["sh", "-c", script], check=False)
    assert unchecked.exit_code == 3 and unchecked.stderr.count("problem") == 5


def test_prompt_with_shell_metacharacters_stays_text(connection, tmp_path):
    canary = Path(f"/tmp/canary-{uuid.uuid4().hex}")
    prompt = (
        f"$(touch {canary}) `touch {canary}` ; touch {canary} && echo no | cat > {canary}\n"
        'it\'s "quoted" \\ back\\slash\t$HOME ${PATH} * ? [a] ~ # ! % 日本語 é\n'
    )
    result = connection.run(["printf", "%s", prompt])
    assert result.stdout == prompt
    # Environment values and the working folder are quoted too.
    weird_dir = tmp_path / "a dir; $(touch x)"
    weird_dir.mkdir()
    result = connection.run(
        ["sh", "-c", 'printf %s "$PROMPT"; pwd'], env={"PROMPT": prompt}, cwd=str(weird_dir)
    )
    assert result.stdout == prompt + f"{weird_dir}\n"
    assert prompt not in result.command  # env values (tokens, say) never reach the record
    assert not canary.exists()
    assert not (weird_dir / "x").exists()
    # A NUL cannot survive exec: refused before anything runs.
    runs = connection.counters.exec
    with pytest.raises(ValueError, match="NUL"):
        connection.run(["printf", "%s", "a\x00b"])
    assert connection.counters.exec == runs


def test_plain_string_commands_are_refused_and_shell_text_must_be_marked(connection):
    with pytest.raises(TypeError, match="ShellCommand"):
        connection.run("echo hi")
    assert connection.run(ShellCommand("echo hi | tr a-z A-Z")).stdout == "HI\n"


def test_command_timeout_stops_waiting(connection):
    start = time.monotonic()
    with pytest.raises(RemoteCommandError) as caught:
        connection.run(["sh", "-c", "echo started; sleep 5"], timeout_s=0.5)
    assert caught.value.code == "command_timeout"
    assert caught.value.result.exit_code is None
    assert caught.value.result.stdout == "started\n"
    assert time.monotonic() - start < 2.5


def test_dropped_connection_is_reported_and_the_next_call_reconnects(sshd):
    with Connection(sshd.settings()) as conn:
        conn.connect()
        killer = threading.Timer(0.3, sshd.kill_sessions)
        killer.start()
        start = time.monotonic()
        with pytest.raises(SSHError) as caught:
            conn.run(["sleep", "10"])
        killer.join()
        assert caught.value.code == "connection_lost"
        assert time.monotonic() - start < 3
        assert conn.run(["echo", "back"]).stdout == "back\n"
        assert conn.counters.connect == 2
