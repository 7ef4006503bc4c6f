"""The contract is in the repository: docs/architecture.md names every module, and code cites it.

"A reader can find where any behaviour lives in one step": a module missing from
docs/architecture.md fails here, so does a citation of a design file that does not ship or of a
section that does not exist.
"""

from __future__ import annotations

from pathlib import Path
import re
import subprocess

ROOT = Path(__file__).parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
INTEGRATION = ROOT / "custom_components" / "heartbeat_iot"


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    suffixes = {".py", ".md", ".toml", ".yaml", ".yml", ".json", ".txt", ""}
    return [
        ROOT / name for name in listed if Path(name).suffix in suffixes and (ROOT / name).is_file()
    ]


def test_every_integration_module_is_in_the_architecture() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = [
        str(path.relative_to(INTEGRATION))
        for path in sorted(INTEGRATION.rglob("*.py"))
        if path.name != "__init__.py" and path.name not in text
    ]
    assert missing == [], f"docs/architecture.md does not say what these do: {missing}"


def test_no_citation_of_a_design_file_that_does_not_ship() -> None:
    pattern = re.compile(r"DESIGN(\.md)?\s*(§|section)")
    offenders = [
        str(path.relative_to(ROOT))
        for path in _tracked_text_files()
        if path != Path(__file__)
        and pattern.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


def test_cited_sections_exist() -> None:
    sections = {
        int(m.group(1))
        for m in re.finditer(r"^## (\d+)\.", ARCHITECTURE.read_text(encoding="utf-8"), re.M)
    }
    assert sections >= set(range(1, 13))
    cited = re.compile(r"architecture\.md\)?,?\s*§\s*(\d+)")
    rule = re.compile(r"availability rule (\d+)")
    availability = ARCHITECTURE.read_text(encoding="utf-8").split("## 5.")[1].split("\n## ")[0]
    rules = len(re.findall(r"^\d+\. ", availability, re.M))
    assert rules == 9
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in cited.finditer(text):
            assert int(match.group(1)) in sections, f"{path}: {match.group(0)}"
        for match in rule.finditer(text):
            assert 1 <= int(match.group(1)) <= rules, f"{path}: {match.group(0)}"
