"""``teran-es serve``: a search page and a JSON API over one ingested collection.

A thin layer: :mod:`service` composes the library (searcher, catalog, search by image,
thumbnails), :mod:`app` maps HTTP to it (FastAPI), :mod:`models` types the JSON, and
``static/`` is the page (plain HTML, CSS and JavaScript, shipped as package data).
"""
