"""The page ships with the package: setup.cfg's package data covers every file of web/static."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_wheel_ships_every_file_of_the_page():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    globs = config["options.package_data"]["teran_es.web"].split()
    web = REPO / "teran_es" / "web"
    files = {p.relative_to(web).as_posix() for p in (web / "static").rglob("*") if p.is_file()}
    covered = {f for f in files if any(Path(f).match(g) and f.count("/") == g.count("/") for g in globs)}
    assert {"static/index.html", "static/app.js", "static/style.css"} <= files
    assert covered == files


def test_the_server_is_installed_with_the_package():
    """`pip install -e . && teran-es demo --serve` must work: fastapi and uvicorn are not an extra."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requires = config["options"]["install_requires"]
    assert "fastapi" in requires and "uvicorn" in requires
