"""Authenticated, encrypted clusters: a second local server with security on, HTTPS with a CA
and a server certificate this test makes (the `cryptography` package), and users of the file
realm made with the distribution's `elasticsearch-users` tool (passwords read from stdin).

Right credentials work end to end (basic auth from the environment or from the URL); wrong
ones, a wrong CA and a role without write access give clear errors; secrets never appear in
logs, saved configs, the work directory, the index ``_meta``, or exception messages.

Not possible with this distribution: creating an API key. The API stores keys in the
``.security`` system index, whose mapping needs the ``analysis-common`` module that the
minimal integ-test-zip leaves out; that test skips saying so (and runs where it works). An
API key from the environment is still tested against the server: it is the one sent (it
wins over basic auth) and a wrong one is refused clearly.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import logging
import secrets
import shutil
import ssl
import subprocess
import traceback
import urllib.request
import uuid
from types import SimpleNamespace

import pytest

from teran_es.config import ElasticsearchConfig, load_config, save_config
from teran_es.index import IndexUnavailableError, SurrogateDocument
from teran_es.index.connection import NoElasticsearchError, resolve_connection
from teran_es.index.elastic import ElasticIndex
from teran_es.searcher import Searcher
from teran_es.server.install import ELASTICSEARCH_VERSION
from teran_es.server.java import find_java, required_java_major
from teran_es.server.process import start, stop
from teran_es.server.state import server_paths

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]

META = {"quantizer_fingerprint": "quant-sec", "model_fingerprint": "model-sec"}
ROLES = """
teran_writer:
  cluster: ["monitor", "manage_own_api_key"]
  indices:
    - names: ["teran-*"]
      privileges: ["all"]
teran_reader:
  cluster: ["monitor"]
  indices:
    - names: ["teran-*"]
      privileges: ["read", "view_index_metadata"]
"""
SECURITY_SETTINGS = {
    "xpack.security.enabled": "true",
    "xpack.security.http.ssl.enabled": "true",
    "xpack.security.http.ssl.certificate": "certs/server.crt",
    "xpack.security.http.ssl.key": "certs/server.key",
    "xpack.security.http.ssl.certificate_authorities": "certs/ca.crt",
}


def write_certificates(directory) -> None:
    """ca.crt (a CA made now), server.crt + server.key (for 127.0.0.1, signed by it), and
    other-ca.crt (a CA that signed nothing here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    def ca(name):
        key = ec.generate_private_key(ec.SECP256R1())
        return key, certificate(name, name, key.public_key(), key, [(x509.BasicConstraints(ca=True, path_length=0), True)])

    def pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = ca("teran-es test CA")
    _, other_cert = ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = certificate(
        "127.0.0.1",
        "teran-es test CA",
        server_key.public_key(),
        ca_key,
        [
            (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), False),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    (directory / "ca.crt").write_bytes(pem(ca_cert))
    (directory / "other-ca.crt").write_bytes(pem(other_cert))
    (directory / "server.crt").write_bytes(pem(server_cert))
    (directory / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def add_user(home, config_dir, java_home, name: str, password: str, role: str) -> None:
    """A file-realm user; the password goes through stdin, never the command line."""
    proc = subprocess.run(
        [str(home / "bin" / "elasticsearch-users"), "useradd", name, "-r", role],
        input=f"{password}\n{password}\n",
        env={"PATH": "/usr/bin:/bin", "ES_PATH_CONF": str(config_dir), "ES_JAVA_HOME": java_home},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def secure_server(server_cache_with_distribution, tmp_path_factory):
    """A second local server with security on: HTTPS only, users ``teran`` (writes teran-*
    indexes) and ``reader`` (reads them), random passwords."""
    pytest.importorskip("cryptography")
    root = tmp_path_factory.mktemp("secure")
    cache = server_cache_with_distribution(root / "cache")
    home = server_paths().home(ELASTICSEARCH_VERSION)
    config_dir = root / "config"
    # A config directory of its own: keystore, users and certificates stay out of the shared distribution.
    shutil.copytree(home / "config", config_dir, ignore=shutil.ignore_patterns("elasticsearch.keystore"))
    with (config_dir / "roles.yml").open("a") as fh:
        fh.write(ROLES)
    write_certificates(config_dir / "certs")
    java = find_java(required_java_major(ELASTICSEARCH_VERSION))
    users = {
        "teran": ("teran_writer", "tw-" + secrets.token_urlsafe(18)),
        "reader": ("teran_reader", "tr-" + secrets.token_urlsafe(18)),
    }
    for name, (role, password) in users.items():
        add_user(home, config_dir, java.path, name, password, role)
    ca_file = config_dir / "certs" / "ca.crt"
    context = ssl.create_default_context(cafile=str(ca_file))
    token = base64.b64encode(f"teran:{users['teran'][1]}".encode()).decode()

    def ready(url: str) -> bool:
        request = urllib.request.Request(f"{url}/_cluster/health", headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                return json.loads(response.read())["status"] in ("yellow", "green")
        except OSError:
            return False

    state, _ = start(
        cache_dir=cache, heap="512m", settings=SECURITY_SETTINGS, config_dir=config_dir, ready=ready, log=lambda _m: None
    )
    assert state.url.startswith("https://127.0.0.1:")
    yield SimpleNamespace(
        url=state.url,
        ca=str(ca_file),
        other_ca=str(config_dir / "certs" / "other-ca.crt"),
        password=users["teran"][1],
        reader_password=users["reader"][1],
    )
    stop(cache)


@pytest.fixture
def admin(secure_server):
    """A client of the secure server as ``teran``, for set-up and clean-up."""
    from elasticsearch import Elasticsearch

    client = Elasticsearch(
        secure_server.url, basic_auth=("teran", secure_server.password), ca_certs=secure_server.ca
    )
    names: list[str] = []
    yield client, names
    for name in names:
        for concrete in client.indices.get(index=name, ignore_unavailable=True):  # the alias's indexes
            client.indices.delete(index=concrete)
    client.close()


@pytest.fixture
def environment(monkeypatch):
    """Sets the ELASTICSEARCH_* variables of a test (and only those it names)."""
    for variable in ("ELASTICSEARCH_URL", "ELASTICSEARCH_API_KEY", "ELASTICSEARCH_USERNAME",
                     "ELASTICSEARCH_PASSWORD", "ELASTICSEARCH_CA_CERTS"):
        monkeypatch.delenv(variable, raising=False)

    def set_variables(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"ELASTICSEARCH_{key.upper()}", value)

    return set_variables


def everything_said(exc: BaseException) -> str:
    """The message, repr and whole traceback of an exception, causes included."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def open_index(url: str, admin=None, **config) -> ElasticIndex:
    name = f"teran-sec-{uuid.uuid4().hex[:10]}"
    if admin is not None:
        admin[1].append(name)
    return ElasticIndex.open(ElasticsearchConfig(url=url, **config), name, meta=META, dead_letter_path="/dev/null")


def round_trip(index: ElasticIndex) -> None:
    """Create (done by open), add, search, count."""
    report = index.add([SurrogateDocument(id=f"img-{i}", terms={"p1": 1 + i, "n2": 3}) for i in range(20)])
    index.refresh()
    assert (report.indexed, report.failed, index.count()) == (20, 0, 20)
    assert index.search({"p1": 1.0}, 3)[0].id == "img-19"


@pytest.mark.parametrize(
    "credentials",
    [{"username": "teran", "password": "not-the-password"}, {"username": "nobody", "password": "x" * 12}, {}],
    ids=["wrong password", "unknown user", "none"],
)
def test_wrong_credentials_are_refused_clearly_and_never_shown(secure_server, environment, caplog, credentials):
    caplog.set_level(logging.DEBUG)
    environment(ca_certs=secure_server.ca, **credentials)
    with pytest.raises(IndexUnavailableError) as failure:
        open_index(secure_server.url)
    said = everything_said(failure.value)
    assert "refused the credentials" in str(failure.value) and "authentication failed (401)" in str(failure.value)
    assert "ELASTICSEARCH_USERNAME" in str(failure.value) and "ELASTICSEARCH_API_KEY" in str(failure.value)
    for secret in (credentials.get("password"), secure_server.password):
        if secret:
            assert secret not in said and secret not in caplog.text


def test_basic_auth_and_ca_from_the_environment_work_end_to_end(
    secure_server, environment, admin, tiny_pipeline, ingest_tiny, tiny_quantizer, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    environment(username="teran", password=secure_server.password, ca_certs=secure_server.ca)
    name = f"teran-sec-{uuid.uuid4().hex[:10]}"
    admin[1].append(name)
    config = tiny_pipeline(
        f"workdir={tmp_path / 'work'}",
        "index.backend=elasticsearch",
        f"index.name={name}",
        f"elasticsearch.url={secure_server.url}",
        *tiny_quantizer,
    )
    model, _, report = ingest_tiny(config, n=60)
    assert report.total_in_index == 60 and report.index_failed == 0
    searcher = Searcher.open(config, model=model)
    try:
        hits = searcher.search("a red cat", k=5, candidates=60).hits
        described = repr(searcher.index) + str(resolve_connection(config.elasticsearch))
    finally:
        searcher.close()
    assert len(hits) == 5

    secret = secure_server.password
    assert secret not in caplog.text and secret not in described
    meta = next(iter(admin[0].indices.get_mapping(index=name).values()))["mappings"]["_meta"]  # behind the alias
    assert secret not in json.dumps(meta) and set(META) <= set(meta)
    for path in (tmp_path / "work").rglob("*"):  # saved config, quantizer, store, skipped list ...
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_credentials_in_the_url_work_and_are_never_saved_or_shown(secure_server, environment, admin, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    environment()
    host = secure_server.url.removeprefix("https://")
    url = f"https://teran:{secure_server.password}@{host}"
    index = open_index(url, admin, ca_certs=secure_server.ca)  # the CA from the config this time
    try:
        round_trip(index)
        described = repr(index)
    finally:
        index.close()
    config = load_config(None, [f"elasticsearch.url={url}", f"elasticsearch.ca_certs={secure_server.ca}"])
    saved = save_config(config, tmp_path / "config.toml").read_text()
    assert f"https://{host}" in saved
    for said in (saved, described, caplog.text):
        assert secure_server.password not in said


def test_the_ca_certificate_is_honoured(secure_server, environment, admin):
    environment(username="teran", password=secure_server.password, ca_certs=secure_server.ca)
    round_trip(open_index(secure_server.url, admin))  # the CA from ELASTICSEARCH_CA_CERTS
    # The config's CA wins over the environment's: a CA that did not sign the server's certificate fails.
    with pytest.raises(IndexUnavailableError, match="TLS failed.*elasticsearch.ca_certs"):
        open_index(secure_server.url, ca_certs=secure_server.other_ca)
    environment(ca_certs="")  # no CA at all: the system's, which does not know the test CA
    with pytest.raises(IndexUnavailableError, match="TLS failed.*ELASTICSEARCH_CA_CERTS"):
        open_index(secure_server.url)
    with pytest.raises(NoElasticsearchError, match="does not exist"):
        open_index(secure_server.url, ca_certs=secure_server.ca + ".missing")


def test_a_role_without_write_access_gets_a_clear_error(secure_server, environment):
    environment(username="reader", password=secure_server.reader_password, ca_certs=secure_server.ca)
    with pytest.raises(IndexUnavailableError, match="may not do this") as failure:
        open_index(secure_server.url)
    assert "403" in str(failure.value) and secure_server.reader_password not in everything_said(failure.value)


def test_an_api_key_from_the_environment_wins_over_basic_auth_and_a_wrong_one_is_refused(
    secure_server, environment, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong_key = base64.b64encode(f"{uuid.uuid4().hex}:{secrets.token_urlsafe(22)}".encode()).decode()
    environment(api_key=wrong_key, username="teran", password=secure_server.password, ca_certs=secure_server.ca)
    assert resolve_connection(ElasticsearchConfig(url=secure_server.url)).auth_kind == "api key"
    with pytest.raises(IndexUnavailableError, match="refused the credentials") as failure:
        open_index(secure_server.url)  # basic auth alone would have worked
    for secret in (wrong_key, secure_server.password):
        assert secret not in everything_said(failure.value) and secret not in caplog.text


# The success path of an API key made through the API is not tested: this integ-test-zip cannot
# create keys (its .security index needs the analysis-common module, left out of the zip).
