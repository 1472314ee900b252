"""Compare two junit files of the same test run: which test ids changed outcome.

python compare.py stock.xml defer.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def outcomes(path: str) -> dict[str, str]:
    results: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        results[test_id] = "error" if "error" in kinds else kinds[0] if kinds else "passed"
    return results


def main(stock_path: str, defer_path: str) -> int:
    stock, defer = outcomes(stock_path), outcomes(defer_path)
    print("stock:    ", dict(Counter(stock.values())))
    print("DeferTask:", dict(Counter(defer.values())))
    changed = sorted(test for test in stock.keys() | defer.keys() if stock.get(test) != defer.get(test))
    for test in changed:
        print(f"{stock.get(test, 'absent'):>8} -> {defer.get(test, 'absent'):<8} {test}")
    print(f"{len(changed)} tests changed outcome")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
