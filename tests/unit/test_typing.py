"""The package type-checks strictly (CONVENTIONS 9): a typing regression fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def mypy_strict(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_mypy_strict_on_the_package() -> None:
    result = mypy_strict("src/fastgw")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict_on_the_bench() -> None:
    result = mypy_strict("bench")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_exchange_and_its_test_double_are_what_hooks_are_promised() -> None:
    # context_types.py: Exchange (as _proxy.pyi types it) and FakeExchange are RequestContexts,
    # RoutePlan and Target the views of a route and a target it hands out.
    result = mypy_strict("tests/unit/context_types.py", "tests/support/exchange.py")
    assert result.returncode == 0, result.stdout + result.stderr
