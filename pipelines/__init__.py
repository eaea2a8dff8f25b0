"""Pipeline files (TOML), shipped as data of the package ``teran_es.pipelines``."""
