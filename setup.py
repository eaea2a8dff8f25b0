"""Only for what setup.cfg cannot say: the top-level mappings/, pipelines/ and models/ folders
ship as the packages ``teran_es.mappings``, ``teran_es.pipelines`` and ``teran_es.models`` so
that the Elasticsearch mappings, the pipeline files (the demo's training settings) and the
committed demo model are found after any install."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["teran_es", "teran_es.*"]), "teran_es.mappings", "teran_es.pipelines", "teran_es.models"])
