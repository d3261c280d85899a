"""Fixtures of the report tests: the real CRM dataset (never copied into the repository)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ON_CI

#: A fixed "now", long after the CRM data: every period of 2017 is over.
NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def crm_path() -> Path:
    """``../shared/data/crm`` next to the repository (or ``OPSCOPE_CRM_DATA``)."""
    env = os.environ.get("OPSCOPE_CRM_DATA")
    return (
        Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data" / "crm"
    )


@pytest.fixture(scope="session")
def crm_dir() -> Path:
    """The CRM Sales Opportunities dataset; skips when absent (fails under CI)."""
    path = crm_path()
    if not (path / "sales_pipeline.csv").is_file():
        message = f"the CRM dataset is not at {path} (set OPSCOPE_CRM_DATA)"
        if ON_CI:
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return path
