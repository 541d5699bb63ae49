"""TLS between our client and our server (the reference's own TLS does not work).

Certificates are made with the openssl command line: a CA, and a server certificate
for 127.0.0.1 and localhost signed by it.
"""

import shutil
import subprocess

import pytest

import peng3dnet_rs

LOCAL = ("127.0.0.1", 0)


def openssl(*args, cwd):
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates (apt-get install openssl)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + "-key.pem", "-out", name + ".pem", "-days", "2", "-subj", "/CN=" + name,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            cwd=d)
    return d / (name + ".pem")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ca = make_ca(d, "test-ca")
    other_ca = make_ca(d, "other-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "test-ca.pem", "-CAkey", "test-ca-key.pem",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "client-key.pem", "-out", "client.csr", "-subj", "/CN=client", cwd=d)
    (d / "client.cnf").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n"
    )
    openssl("x509", "-req", "-in", "client.csr", "-CA", "test-ca.pem", "-CAkey", "test-ca-key.pem",
            "-CAcreateserial", "-out", "client.pem", "-days", "2", "-extfile", "client.cnf", cwd=d)
    return {
        "ca": ca,
        "other_ca": other_ca,
        "cert": d / "server.pem",
        "key": d / "server-key.pem",
        "client_cert": d / "client.pem",
        "client_key": d / "client-key.pem",
    }


@pytest.fixture
def tls_server(certs):
    tls = {"cert": str(certs["cert"]), "key": certs["key"]}  # str or path-like
    with peng3dnet_rs.PingServer(LOCAL, data={"name": "secure"}, tls=tls) as server:
        yield server


def test_verified_tls_ping(tls_server, certs):
    reply = peng3dnet_rs.ping_server(tls_server.address, tls={"ca": certs["ca"]}, timeout=5)
    assert reply["name"] == "secure"


def test_server_name_override(tls_server, certs):
    reply = peng3dnet_rs.ping_server(tls_server.address, tls={"ca": certs["ca"], "server_name": "localhost"}, timeout=5)
    assert reply["name"] == "secure"
    with pytest.raises(peng3dnet_rs.TlsError):
        peng3dnet_rs.ping_server(tls_server.address, tls={"ca": certs["ca"], "server_name": "elsewhere.example"}, timeout=5)


def test_wrong_ca_is_a_tls_error(tls_server, certs):
    with pytest.raises(peng3dnet_rs.TlsError):
        peng3dnet_rs.ping_server(tls_server.address, tls={"ca": certs["other_ca"]}, timeout=5)


def test_insecure_accepts_any_certificate(tls_server, certs):
    assert peng3dnet_rs.ping_server(tls_server.address, tls="insecure", timeout=5)["name"] == "secure"
    assert peng3dnet_rs.ping_server(tls_server.address, tls={"insecure": True}, timeout=5)["name"] == "secure"


def test_tls_client_against_a_plain_server(certs):
    with peng3dnet_rs.PingServer(LOCAL) as plain:
        with pytest.raises(peng3dnet_rs.TlsError):
            peng3dnet_rs.ping_server(plain.address, tls={"ca": certs["ca"]}, timeout=5)


def test_plain_client_against_a_tls_server(tls_server):
    # The TLS server waits for a ClientHello, the plain client for a hello: no answer.
    with pytest.raises(peng3dnet_rs.PingTimeout) as caught:
        peng3dnet_rs.ping_server(tls_server.address, timeout=0.5)
    assert caught.value.phase == "waiting for hello"


def test_tls_in_ping_many_and_async(tls_server, certs):
    import asyncio

    results = list(peng3dnet_rs.ping_many([tls_server.address] * 3, tls={"ca": certs["ca"]}, timeout=5))
    assert all(r.ok for r in results)

    async def main():
        return await peng3dnet_rs.ping_server_async(tls_server.address, tls={"ca": certs["ca"]}, timeout=5)

    assert asyncio.run(main())["name"] == "secure"


def test_required_client_certificate(certs):
    tls = {"cert": certs["cert"], "key": certs["key"], "client_ca": certs["ca"], "require_client_cert": True}
    with peng3dnet_rs.PingServer(LOCAL, data={"name": "mutual"}, tls=tls) as server:
        with_cert = {"ca": certs["ca"], "cert": certs["client_cert"], "key": certs["client_key"]}
        assert peng3dnet_rs.ping_server(server.address, tls=with_cert, timeout=5)["name"] == "mutual"
        # TLS 1.3: the server's refusal comes as an alert after the client's handshake.
        with pytest.raises((peng3dnet_rs.TlsError, peng3dnet_rs.ConnectionLost), match="requires a client certificate"):
            peng3dnet_rs.ping_server(server.address, tls={"ca": certs["ca"]}, timeout=5)


def test_bad_server_tls_arguments(certs, tmp_path):
    with pytest.raises(ValueError, match="cert"):
        peng3dnet_rs.PingServer(LOCAL, tls={"cert": certs["cert"]})
    with pytest.raises(ValueError, match="unknown"):
        peng3dnet_rs.PingServer(LOCAL, tls={"cert": certs["cert"], "key": certs["key"], "ca": "x"})
    with pytest.raises(TypeError):
        peng3dnet_rs.PingServer(LOCAL, tls=True)
    with pytest.raises(peng3dnet_rs.TlsError, match="missing.pem"):
        peng3dnet_rs.PingServer(LOCAL, tls={"cert": tmp_path / "missing.pem", "key": certs["key"]})
