"""`python -m moovitamix_assets.registry_cli list|rollback --to-version N`: the model registry."""

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from moovitamix_assets.defs.recommendation import registry
from moovitamix_assets.warehouse.database import PostgresResource


def _format_entry(entry: Any) -> str:
    precision, serving = (
        (entry.metrics.get(model) or {}).get("precision_at_k") for model in ("candidate", "serving")
    )
    if entry.model_type == registry.MODEL_TYPE_FALLBACK:
        figures = "refitted on each day's listening"
    elif precision is not None and serving is not None:
        figures = f"P@k {precision:.4f} vs {serving:.4f} for what served then"
    else:
        figures = "no metrics"
    return (
        f"v{entry.version:<4} {entry.state:<10} {entry.model_type:<16} "
        f"registered {entry.trained_at:%Y-%m-%d %H:%M} UTC  "
        f"data {entry.data_snapshot_date or '-'} ({entry.data_interactions:,} interactions)  "
        f"{figures}\n      gate: {entry.gate_reason}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 on success, 1 on a refused action)."""
    parser = argparse.ArgumentParser(
        prog="python -m moovitamix_assets.registry_cli",
        description="Inspect the model registry (ml.model_registry) and roll production back.",
    )
    help_url = "Warehouse URL (default: $MOOVITAMIX_DATABASE_URL, else the embedded server)."
    parser.add_argument("--database-url", default=None, help=help_url)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="List every registered model, newest first.")
    rollback = commands.add_parser("rollback", help="Serve a previously promoted version again.")
    rollback.add_argument("--to-version", type=int, required=True, help="Version to serve again.")
    args = parser.parse_args(argv)

    engine = PostgresResource(database_url=args.database_url).engine()
    if args.command == "list":
        listing = "\n".join(map(_format_entry, registry.list_entries(engine)))
        sys.stdout.write((listing or "no model registered yet") + "\n")
        return 0

    try:
        previous = registry.promote(engine, args.to_version, rollback=True)
    except registry.RegistryError as exc:
        sys.stderr.write(f"rollback refused: {exc}\n")
        return 1
    sys.stdout.write(
        f"version {args.to_version} is the production model again (was version {previous}); "
        "recommendations switch at the next daily run, or now with: dagster asset materialize "
        "-m moovitamix_assets.definitions --select ml/user_recommendations\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
