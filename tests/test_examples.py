"""The examples run offline and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "quickstart.py",
            [
                "answered by gpt-4o-mini via openai",
                "mode=cheap",
                "vision-only: missing capability: tools",
                "-> claude-haiku; attempts: [('gpt-4o-mini', 'rate_limited'), ('claude-haiku', 'ok')]",
                "saw 3 HTTP requests",
            ],
        ),
        (
            "prometheus_metrics.py",
            [
                'gen_ai_client_operation_duration_seconds_count{error_type="overloaded"',
                'tokenhub_router_attempts_total{gen_ai_operation_name="chat"',
                'tokenhub_router_failovers_total{error_type="overloaded"',
            ],
        ),
        (
            "sync_tools.py",
            [
                "get_weather({'city': 'Paris'}) id=toolu_1",
                "It is 18°C in Paris.",
                "['tool_use', 'tool_result']",
            ],
        ),
    ],
)
def test_example_runs(name: str, expected: list[str]) -> None:
    """Each example exits cleanly and prints its key lines."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for line in expected:
        assert line in out.stdout
