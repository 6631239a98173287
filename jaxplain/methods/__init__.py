"""Explainers, one short file per family, each built on `jaxplain.engine`."""
