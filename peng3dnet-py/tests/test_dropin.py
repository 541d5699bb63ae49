"""The drop-in proof: dropin/ping_script.py, written only against the original's API,
runs unchanged with the original (peng3dnet 0.1.3a0) and, with only its import line
changed, with peng3dnet_rs.compat: same output, same behaviour, interop both ways."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REF_ENV, free_port

SCRIPT = Path(__file__).parent / "dropin" / "ping_script.py"
ORIGINAL_IMPORT = "import peng3dnet.net as net, peng3dnet.ext.ping as ping"
OUR_IMPORT = "import peng3dnet_rs.compat.net as net, peng3dnet_rs.compat.ping as ping"

#: What differs, and why: our servers add their timestamps (servertiming) to every pong,
#: and our client sends a sequence number (seq) in every ping, which servers echo.
OUR_SERVER_EXTRA_KEYS = {"servertiming"}
OUR_CLIENT_EXTRA_ECHO_KEYS = {"seq"}


@pytest.fixture(scope="module")
def scripts(reference, tmp_path_factory):
    """{"original": path, "ours": path}: the script, and its copy with the import line
    changed (that line only)."""
    text = SCRIPT.read_text()
    assert text.count(ORIGINAL_IMPORT) == 1
    ours = tmp_path_factory.mktemp("dropin") / "ping_script.py"
    ours.write_text(text.replace(ORIGINAL_IMPORT, OUR_IMPORT))
    changed = [
        (a, b) for a, b in zip(text.splitlines(), ours.read_text().splitlines()) if a != b
    ]
    assert len(changed) == 1 and changed[0][1].startswith(OUR_IMPORT)
    return {"original": (reference, SCRIPT), "ours": (sys.executable, ours)}


def run(scripts, side, mode, port):
    python, path = scripts[side]
    done = subprocess.run(
        [python, str(path), mode, str(port)], capture_output=True, text=True, env=REF_ENV, timeout=90
    )
    assert done.returncode == 0, "%s %s: exit %s\n%s" % (side, mode, done.returncode, done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


class Served:
    """The script's server mode, in a subprocess, until ``stop()``."""

    def __init__(self, scripts, side):
        python, path = scripts[side]
        self.port = free_port()
        self.proc = subprocess.Popen(
            [python, str(path), "serve", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=REF_ENV,
            text=True,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            pytest.fail("%s server did not start: %r\n%s" % (side, line, self.proc.stderr.read()[-3000:]))

    def stop(self):
        """Closes its stdin; returns what it printed then (STOPPED once shut down)."""
        self.proc.stdin.close()
        try:
            out = self.proc.stdout.read()
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return out.strip()


def normalised(output, server, client):
    """The script's output with only the documented differences taken out."""
    if "results" not in output:  # the mixin's: one pong
        if server == "ours":
            for key in ("keys", "on_pong_keys"):
                assert OUR_SERVER_EXTRA_KEYS <= set(output[key])
                output[key] = [k for k in output[key] if k not in OUR_SERVER_EXTRA_KEYS]
        return output
    for result in output["results"]:
        if server == "ours":
            assert OUR_SERVER_EXTRA_KEYS <= set(result["keys"])
            result["keys"] = [k for k in result["keys"] if k not in OUR_SERVER_EXTRA_KEYS]
        if client == "ours":
            assert OUR_CLIENT_EXTRA_ECHO_KEYS <= set(result["oldmsg_keys"])
            result["oldmsg_keys"] = [k for k in result["oldmsg_keys"] if k not in OUR_CLIENT_EXTRA_ECHO_KEYS]
    return output


@pytest.fixture(scope="module")
def outputs(scripts):
    """The script's ping output for each (server, client) pair of implementations, each
    pair with a server of its own (its count starts at 1)."""
    got = {}
    for server in ("original", "ours"):
        for client in ("original", "ours"):
            served = Served(scripts, server)
            try:
                got[server, client] = run(scripts, client, "ping", served.port)
                got[server, client, "mixin"] = run(scripts, client, "mixin", served.port)
            finally:
                assert served.stop() == "STOPPED"
    return got


def test_the_original_runs_the_script(outputs):
    """The baseline: what the original itself prints (static and dynamic data, pingdata
    changed by getPingData in the same pong, the caller's dict given its time)."""
    results = outputs["original", "original"]["results"]
    assert [r["name"] for r in results] == ["dropin-server", "renamed", "renamed"]
    assert [r["count"] for r in results] == [1, 2, 3]
    assert [r["echo_x"] for r in results] == [1, 2, 3]
    assert all(r["cid_is_int"] and r["delay_ok"] and r["time_written_back"] for r in results)
    assert results[0]["keys"] == sorted(
        ["cid_is_int", "count", "delay", "echo_x", "motd", "name", "oldmsg", "peng3dnet", "recvtime"]
    )


@pytest.mark.parametrize(
    "server, client",
    [("ours", "ours"), ("original", "ours"), ("ours", "original")],
    ids=["ours-both-sides", "our-client-original-server", "original-client-our-server"],
)
def test_the_changed_script_prints_what_the_original_prints(outputs, server, client):
    expected = outputs["original", "original"]
    assert normalised(outputs[server, client], server, client) == expected


def test_the_original_runs_the_client_mixin(outputs):
    out = outputs["original", "original", "mixin"]
    assert out["name"] == "renamed" and out["echo_x"] == 7 and out["count"] == 4
    assert out["same_again"] and out["time_written_back"]
    assert out["on_pong_keys"] == out["keys"]
    assert "recvtime" not in out["keys"] and "delay" not in out["keys"]  # the pong as it came


@pytest.mark.parametrize(
    "server, client",
    [("ours", "ours"), ("original", "ours"), ("ours", "original")],
    ids=["ours-both-sides", "our-client-original-server", "original-client-our-server"],
)
def test_the_changed_client_mixin_prints_what_the_original_prints(outputs, server, client):
    expected = outputs["original", "original", "mixin"]
    assert normalised(outputs[server, client, "mixin"], server, client) == expected


@pytest.mark.parametrize("client", ["original", "ours"])
def test_a_failed_ping_is_a_failed_ping_error_for_both(scripts, client):
    """Nothing listens: the original waits its timeout and raises FailedPingError; ours
    raises at once an exception that is one too (and a RuntimeError, as the original's)."""
    assert run(scripts, client, "fail", free_port()) == {"failed": True, "runtime_error": True}
