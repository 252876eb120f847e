"""Secrets from the environment or files; the generated Neo4j password."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from casegraph.config import ensure_generated_password, generated_password_file, neo4j_settings


def test_generated_password_is_a_private_file_reused_by_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASEGRAPH_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("CASEGRAPH_NEO4J_PASSWORD", raising=False)
    monkeypatch.delenv("CASEGRAPH_NEO4J_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("CASEGRAPH_NEO4J_URI", "bolt://127.0.0.1:7999")
    assert neo4j_settings().password is None  # type: ignore[union-attr]
    path, created = ensure_generated_password()
    assert created and path == generated_password_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text(encoding="utf-8").strip()
    assert len(secret) >= 24
    assert ensure_generated_password() == (path, False)
    settings = neo4j_settings()
    assert settings is not None and settings.password == secret
    assert secret not in repr(settings)
    monkeypatch.setenv("CASEGRAPH_NEO4J_PASSWORD", "mine")
    assert neo4j_settings().password == "mine"  # type: ignore[union-attr]
