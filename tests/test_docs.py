"""The docs: the configuration reference is generated from the settings model and must match it; the
README stays the short front door and starts with the two commands."""

from __future__ import annotations

from pathlib import Path

from scripts.config_reference import PAGE, page_table, table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_configuration_reference_matches_settings() -> None:
    assert page_table(PAGE.read_text()) == table(), "run: .venv/bin/python scripts/config_reference.py --write"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text[text.index("```bash") : text.index("```", text.index("```bash") + 3)]
    assert "scripts/demo" in first_block and "scripts/test" in first_block


def test_readme_is_the_short_front_door() -> None:
    assert len(README.read_text().splitlines()) <= 150


def test_readme_links_reach_files() -> None:
    text = README.read_text()
    for chunk in text.split("](")[1:]:
        target = chunk.split(")", 1)[0].split("#", 1)[0]
        if target and "://" not in target:
            assert (ROOT / target).exists(), target
