"""`python -m moovitamix_assets.registry_cli list|rollback --to-version N`: the model registry."""

import argparse
import sys
from collections.abc import Sequence

from moovitamix_assets.defs.recommendation import registry
from moovitamix_assets.warehouse.database import PostgresResource


def _format_entry(entry: registry.RegistryEntry) -> str:
    precision = entry.metric("candidate", "precision_at_k")
    serving = entry.metric("serving", "precision_at_k")
    if entry.is_fallback:
        figures = "refitted on each day's listening"
    elif precision is not None and serving is not None:
        figures = f"P@k {precision:.4f} vs {serving:.4f} for what served then"
    else:
        figures = "no metrics"
    day = entry.snapshot.snapshot_date.isoformat() if entry.snapshot.snapshot_date else "-"
    return (
        f"v{entry.version:<4} {entry.state:<10} {entry.model_type:<16} "
        f"registered {entry.trained_at:%Y-%m-%d %H:%M} UTC  "
        f"data {day} ({entry.snapshot.interactions:,} interactions)  {figures}\n"
        f"      gate: {entry.gate_reason}"
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
        previous = registry.rollback(engine, args.to_version)
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
