"""`teran-es serve` on the Elasticsearch backend: the small OpenMoji collection ingested into a
uniquely named index (deleted at the end), served through a TCP relay that the test cuts and
restores, as a server that goes away and comes back would: searches and health get a 503
with a message while it is gone, and answer again once it is back, with no restart."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

pytestmark = [pytest.mark.elasticsearch, pytest.mark.slow]


class Relay:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` drops every connection and refuses
    new ones, ``restore()`` listens on the same port again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        assert self._listener is not None
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open.clear()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def es_collection(tiny_openmoji, tiny_openmoji_config, es_url, es_admin, tmp_path_factory):
    """The tiny collection ingested into an Elasticsearch index of its own: its work directory."""
    from teran_es.config import save_config
    from teran_es.features.image_table import iter_collection_images
    from teran_es.indexer import Ingestor

    name = f"teran-test-serve-{uuid.uuid4().hex[:10]}"
    workdir = tmp_path_factory.mktemp("serve-es") / "work"
    config = tiny_openmoji_config(
        tiny_openmoji["collection"], workdir, "index.backend=elasticsearch", f"index.name={name}",
        f"elasticsearch.url={es_url}", f"elasticsearch.dead_letter_path={workdir / 'dead-letter.jsonl'}",
    )
    try:
        with Ingestor(config) as ingestor:
            report = ingestor.ingest(list(iter_collection_images(tiny_openmoji["collection"])), batch_size=64)
        assert report.total_in_index == 51
        save_config(config, workdir / "config.toml")
        yield workdir, name
    finally:
        for concrete in es_admin.indices.get(index=name, ignore_unavailable=True):  # the alias's indexes
            es_admin.indices.delete(index=concrete)


def test_elasticsearch_going_away_gives_503_and_the_server_recovers(es_collection, es_url, serve_processes):
    workdir, name = es_collection
    parsed = urllib.parse.urlsplit(es_url)
    relay = Relay((parsed.hostname, parsed.port))
    url = serve_processes.start(
        "--workdir", str(workdir), "--set", f"elasticsearch.url=http://127.0.0.1:{relay.port}",
        "--set", "elasticsearch.request_timeout=10",
    )
    search = f"{url}/api/search?" + urllib.parse.urlencode({"q": "red heart", "k": 5})
    try:
        status, before = get(search)
        assert status == 200
        assert "openmoji-2764" in [h["id"] for h in before["hits"]]
        status, health = get(f"{url}/api/health")
        assert status == 200 and health["backend"]["kind"] == "elasticsearch"
        assert health["backend"]["index"] == name and health["backend"]["documents"] == 51

        relay.cut()
        status, body = get(search)
        assert status == 503, body
        assert "Elasticsearch" in body["error"]["message"] or "reach" in body["error"]["message"]
        status, health = get(f"{url}/api/health")
        assert status == 503 and health["status"] == "degraded"
        assert health["backend"]["state"] == "unavailable" and health["backend"]["message"]
        # what does not need the index still answers
        assert get(f"{url}/api/images/openmoji-2764")[0] == 200

        relay.restore()
        status, after = get(search)
        assert status == 200
        assert [h["id"] for h in after["hits"]] == [h["id"] for h in before["hits"]]
        assert get(f"{url}/api/health")[0] == 200
    finally:
        serve_processes.stop(url)
        relay.cut()
