"""Where the tests find the repository and their fixtures, wherever a test module sits in the tree."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
