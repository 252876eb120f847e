"""Retrieval: FAISS vector indexes, WSI-only queries, the REST service.

``casegraph.retrieval.query(store, files, patient_id, **options)`` answers one WSI-only
query (see :mod:`casegraph.retrieval.query`); the service is
:func:`casegraph.retrieval.service.create_app`.
"""

from casegraph.retrieval.query import QueryEngine, QueryOptions, query
from casegraph.retrieval.results import QueryResult

__all__ = ["QueryEngine", "QueryOptions", "QueryResult", "query"]
