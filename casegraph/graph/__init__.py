"""The persistent case graph: a GraphStore interface with Neo4j and embedded (DuckDB) backends."""
