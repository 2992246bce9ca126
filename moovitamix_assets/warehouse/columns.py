"""The columns of every warehouse table, read from ``columns.yaml``: the one place that describes
them for the assets' definitions, their column lineage and docs/data-model.md.

Regenerate the column tables of the docs after editing the YAML::

    python -m moovitamix_assets.warehouse.columns docs/data-model.md
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import dagster as dg
import yaml

COLUMNS_FILE: Final = Path(__file__).with_name("columns.yaml")
TABLE_NAME_KEY: Final = "dagster/table_name"
COLUMN_SCHEMA_KEY: Final = "dagster/column_schema"
COLUMN_LINEAGE_KEY: Final = "dagster/column_lineage"
# A generated block of the docs: the column table of one warehouse table between two markers.
_BLOCK: Final = re.compile(r"(<!-- columns: (\S+) -->\n).*?(<!-- /columns -->)", re.DOTALL)


@dataclass(frozen=True)
class Column:
    """One column: its PostgreSQL type (as format_type prints it), meaning and upstream columns."""

    name: str
    type: str
    description: str
    upstream: tuple[tuple[dg.AssetKey, str], ...] = ()


@dataclass(frozen=True)
class Table:
    """One table or view (``schema.table``), the assets that write it, and its columns."""

    name: str
    description: str
    columns: tuple[Column, ...]
    assets: tuple[dg.AssetKey, ...] = ()

    def pg_types(self) -> dict[str, str]:
        """Column name -> PostgreSQL type, in stored order."""
        return {c.name: c.type for c in self.columns}

    def definition_metadata(self) -> dict[str, dg.MetadataValue]:
        """``dagster/table_name`` and ``dagster/column_schema`` (with descriptions) of an asset."""
        columns = [dg.TableColumn(c.name, c.type, c.description) for c in self.columns]
        return {
            TABLE_NAME_KEY: dg.MetadataValue.text(self.name),
            COLUMN_SCHEMA_KEY: dg.MetadataValue.table_schema(dg.TableSchema(columns)),
        }

    def lineage(self, upstream: Collection[dg.AssetKey]) -> dg.TableColumnLineage:
        """Each column's upstream columns among the assets ``upstream`` (an asset's deps)."""
        deps = {
            c.name: [dg.TableColumnDep(key, name) for key, name in c.upstream if key in upstream]
            for c in self.columns
        }
        return dg.TableColumnLineage({name: found for name, found in deps.items() if found})


def _upstream(reference: str) -> tuple[dg.AssetKey, str]:
    key, _, column = reference.rpartition(".")
    return dg.AssetKey.from_user_string(key), column


@functools.cache
def tables() -> dict[str, Table]:
    """Every table of ``columns.yaml`` by ``schema.table``, in the file's order."""
    document = yaml.safe_load(COLUMNS_FILE.read_text())
    return {
        name: Table(
            name=name,
            description=spec["description"],
            assets=tuple(dg.AssetKey.from_user_string(a) for a in spec.get("assets", ())),
            columns=tuple(
                Column(
                    column,
                    str(c["type"]),
                    str(c["description"]),
                    tuple(map(_upstream, c.get("from", ()))),
                )
                for column, c in spec["columns"].items()
            ),
        )
        for name, spec in document.items()
    }


def table(name: str) -> Table:
    """One table by ``schema.table`` (KeyError if ``columns.yaml`` does not describe it)."""
    return tables()[name]


def for_asset(key: dg.AssetKey) -> Table:
    """The table an asset writes (KeyError if ``columns.yaml`` names none)."""
    for found in tables().values():
        if key in found.assets:
            return found
    raise KeyError(f"columns.yaml describes no table of asset {key.to_user_string()}")


def lineage_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, object]:
    """``dagster/column_lineage`` of one asset's materialization, over the asset's own deps."""
    upstream = context.assets_def.asset_deps[key]
    return {COLUMN_LINEAGE_KEY: dg.MetadataValue.column_lineage(for_asset(key).lineage(upstream))}


def render_docs(text: str) -> str:
    """``text`` with every ``<!-- columns: schema.table -->`` block regenerated from the YAML."""

    def block(match: re.Match[str]) -> str:
        rows = [f"| {c.name} | {c.type} | {c.description} |" for c in table(match[2]).columns]
        header = ["| column | type | meaning |", "|---|---|---|"]
        return match[1] + "\n".join([*header, *rows]) + "\n" + match[3]

    return _BLOCK.sub(block, text)


if __name__ == "__main__":  # regenerate the column blocks of each Markdown file named
    for path in map(Path, sys.argv[1:]):
        path.write_text(render_docs(path.read_text()))
