"""Where benchmark scripts leave their tables: printed, and written to benchmarks/results/NAME.md (and NAME.json)."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, table: str, data=None) -> Path:
    """Print `table`, write it to results/NAME.md and, when given, `data` to results/NAME.json; returns the folder."""
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(table + "\n")
    if data is not None:
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1))
    return RESULTS
