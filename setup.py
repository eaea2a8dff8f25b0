"""Only for what setup.cfg cannot say: the top-level mappings/ and pipelines/ folders ship as
the packages ``teran_es.mappings`` and ``teran_es.pipelines`` so that the Elasticsearch
mappings and the pipeline files (the demo's training settings) are found after any install."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["teran_es", "teran_es.*"]), "teran_es.mappings", "teran_es.pipelines"])
