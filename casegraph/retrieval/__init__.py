"""Retrieval: FAISS vector indexes, WSI-only queries, the REST service."""
