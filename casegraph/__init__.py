"""casegraph: graph-database-backed patient similarity for cancer research."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("casegraph")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

# the notebook API (casegraph.api), imported on first use so `import casegraph` and the
# CLI stay light
_API = ("CVResult", "attach", "case_graph", "cross_validate", "ingest_batch", "load_version",
        "open_store", "predict", "query", "sync_graph", "train_version")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        from casegraph import api

        return getattr(api, name)
    raise AttributeError(f"module 'casegraph' has no attribute {name!r}")
