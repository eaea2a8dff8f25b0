"""`teran-es demo --serve`: after the demo, the search page over the demo's work directory."""

from __future__ import annotations


def test_demo_serve_serves_the_demo_work_directory(monkeypatch, tmp_path, capsys):
    import teran_es.demo
    import teran_es.web.run
    from teran_es.cli import main
    from teran_es.demo import DemoResult

    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "config.toml").write_text('name = "demo-openmoji"\n[index]\nbackend = "embedded"\n')
    monkeypatch.setattr(teran_es.demo, "run_openmoji_demo", lambda *a, **kw: DemoResult("openmoji", str(workdir), 0, []))
    served = {}
    monkeypatch.setattr(teran_es.web.run, "serve", lambda config, **kw: served.update(config=config, **kw))
    assert main(["demo", "--serve", "--port", "8123"]) == 0
    assert served["config"].resolved_workdir() == workdir.resolve()
    assert served["config"].checkpoint  # the demo's model
    assert served["host"] == "127.0.0.1" and served["port"] == 8123


def test_serve_goes_with_the_openmoji_demo(capsys):
    from teran_es.cli import main

    assert main(["demo", "--collection", "synthetic", "--serve"]) == 2
    assert "--serve shows images" in capsys.readouterr().err
