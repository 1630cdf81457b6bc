"""The README's configuration reference is generated from the settings model and must match it."""

from __future__ import annotations

from scripts.config_reference import README, readme_table, table


def test_readme_config_table_matches_settings() -> None:
    assert readme_table(README.read_text()) == table(), "run: .venv/bin/python scripts/config_reference.py --write"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text[text.index("```bash") : text.index("```", text.index("```bash") + 3)]
    assert "scripts/demo" in first_block and "scripts/test" in first_block
