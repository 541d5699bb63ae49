"""Shared fixtures: the pure-Python reference as a peer.

The reference (peng3dnet 0.1.3a0) runs in subprocesses of ``PENG3DNET_REF_PYTHON``
(default: this interpreter; scripts/test-python.sh installs it into the same venv).
When it cannot be imported, the tests that need it FAIL: they never skip.
"""

import subprocess

import pytest

from helpers import REF_DIR, REF_ENV, REF_PYTHON


@pytest.fixture(scope="session")
def reference():
    """Fails (never skips) when the reference is not importable."""
    check = subprocess.run(
        [REF_PYTHON, "-c", "import peng3dnet.ext.ping, msgpack"],
        env=REF_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check.returncode != 0:
        pytest.fail(
            "the Python reference peng3dnet 0.1.3a0 is not importable with %s "
            "(run scripts/test-python.sh, or pip install peng3dnet==0.1.3a0 msgpack bidict peng3d):\n%s"
            % (REF_PYTHON, check.stderr[-2000:])
        )
    return REF_PYTHON


@pytest.fixture(scope="module")
def ref_server(reference):
    """A reference pingable server; yields its port."""
    proc = subprocess.Popen(
        [reference, str(REF_DIR / "ref_ping_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the reference prints tracebacks of its threads: noise
        env=REF_ENV,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            pytest.fail("reference server did not start: %r (exit %s)" % (line, proc.poll()))
        yield int(line.split()[1])
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
