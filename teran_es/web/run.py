"""Run the server: open the collection, then serve the app with uvicorn until interrupted."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable

from teran_es.config import PipelineConfig
from teran_es.errors import TeranError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PortUnavailableError(TeranError, OSError):
    """The address and port to serve on cannot be bound."""


def check_port(host: str, port: int) -> None:
    """Raise PortUnavailableError when ``host:port`` cannot be listened on now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PortUnavailableError(f"cannot serve on {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise PortUnavailableError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)"
            ) from None


def serve(
    config: PipelineConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    device: str | None = None,
    say: Callable[[str], None] = print,
    log_level: str = "warning",
    prepare_captions: bool = True,
) -> None:
    """Serve until interrupted. ``prepare_captions``: encode the collection's captions for search
    by image in the background now (once per work directory), not on the first such request."""
    import uvicorn

    from teran_es.web.app import create_app
    from teran_es.web.service import SearchService

    check_port(host, port)  # before the model loads: a taken port is said at once
    service = SearchService.open(config, device=device)
    try:
        app = create_app(service)
        if not is_loopback(host):
            say(
                f"warning: serving on {host}, reachable from other machines: the API has no authentication "
                "and no TLS (see the README, section `teran-es serve`)"
            )
        shown = f"[{host}]" if ":" in host else host
        say(
            f"teran-es serve: {len(service.searcher.store)} images ({config.index.backend} index "
            f"{service.searcher.index.name!r}) at http://{shown}:{port}/  (API docs: /docs; Ctrl-C stops)"
        )
        if prepare_captions and service.catalog.captions():
            threading.Thread(target=_prepare_captions, args=(service, say), daemon=True).start()
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        service.close()


def _prepare_captions(service, say: Callable[[str], None]) -> None:
    from teran_es.errors import TeranError

    try:
        service.captions.bank()
    except (TeranError, OSError) as exc:
        say(f"search by image is not available: {exc}")
