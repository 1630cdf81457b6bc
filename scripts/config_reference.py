"""Print the README's configuration table from the settings model (docs cannot drift: a test
compares this output with the README)."""

from __future__ import annotations

from gateway.config import Settings


def table() -> str:
    rows = ["| flag | env | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
        shown = "(none)" if default in (None, []) else f"`{default}`"
        flag = "--" + name.replace("_", "-")
        rows.append(f"| `{flag}` | `MCPGW_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
