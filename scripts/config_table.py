"""Print the README's configuration table, generated from pycable.config.Config.

`python scripts/config_table.py > /tmp/t.md`; tests/test_docs.py checks the README has it.
"""

from __future__ import annotations

from pycable.config import default_of, env_names, flag_names, option_fields


def table() -> str:
    rows = ["| flag | env | default | description |", "|---|---|---|---|"]
    for f in option_fields():
        default = default_of(f)
        shown = ",".join(default) if isinstance(default, list) else str(default).lower() if isinstance(default, bool) else default
        shown = shown if shown != "" else '""'
        rows.append(
            f"| `{flag_names(f)[0]}` | `{env_names(f)[0]}` | `{shown}` | {f.metadata['help'].replace('|', '/')} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
