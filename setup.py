"""Only for what setup.cfg cannot say: the top-level mappings/ folder ships as the package
``teran_es.mappings`` so that the Elasticsearch mappings are found after any install."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["teran_es", "teran_es.*"]), "teran_es.mappings"])
