-- Least-privilege PostgreSQL roles for the MooVitamix warehouse (see docs/operations.md).
--
--   moovitamix_platform  the Dagster runs: owns the schemas raw, core and ml and everything in
--                        them; may connect and use temporary tables (the core merges stage rows
--                        in TEMP tables). Not a superuser, cannot create databases, roles or
--                        other schemas, and reads nothing outside raw/core/ml.
--   moovitamix_serving   the recommendation service: reads ml.user_recommendations, nothing else,
--                        in read-only transactions.
--
-- Run it as a superuser (or the database owner) while connected to the warehouse database. It is
-- idempotent: run it again after the first materialization of ml.user_recommendations (the grant
-- to the serving role needs the table), and after any upgrade.
--
--   psql -X -v ON_ERROR_STOP=1 -d moovitamix -f deploy/sql/least_privilege.sql
--
-- Role names can be overridden with -v platform_role=... -v serving_role=... . The script sets no
-- password (no default passwords): set them once from a password manager, interactively, so the
-- clear text never reaches the shell history, the server log or this repository:
--
--   psql -d moovitamix -c '\password moovitamix_platform'
--   psql -d moovitamix -c '\password moovitamix_serving'
--
-- The roles are cluster-wide; the grants below apply to the current database only.

\if :{?platform_role}
\else
  \set platform_role moovitamix_platform
\endif
\if :{?serving_role}
\else
  \set serving_role moovitamix_serving
\endif

SELECT current_database() AS warehouse_db \gset

BEGIN;

-- Roles: created when missing, then (re)set to exactly the attributes they need.
SELECT format('CREATE ROLE %I', :'platform_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'platform_role') \gexec
SELECT format('CREATE ROLE %I', :'serving_role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'serving_role') \gexec

ALTER ROLE :"platform_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 32;
ALTER ROLE :"serving_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 64;
-- A serving bug cannot write even where a grant slips through; a runaway query is cut short.
ALTER ROLE :"serving_role" IN DATABASE :"warehouse_db" SET default_transaction_read_only = on;
ALTER ROLE :"serving_role" IN DATABASE :"warehouse_db" SET statement_timeout = '5s';

-- The database: only the roles named here connect; PUBLIC keeps nothing (not even TEMP).
REVOKE ALL ON DATABASE :"warehouse_db" FROM PUBLIC;
REVOKE CREATE ON DATABASE :"warehouse_db" FROM :"platform_role", :"serving_role";
GRANT CONNECT, TEMPORARY ON DATABASE :"warehouse_db" TO :"platform_role";
GRANT CONNECT ON DATABASE :"warehouse_db" TO :"serving_role";
-- PostgreSQL < 15 let everyone create objects in public; 15+ already does not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The platform's schemas, owned by the platform role (CREATE/DROP of its tables, no more).
CREATE SCHEMA IF NOT EXISTS raw AUTHORIZATION :"platform_role";
CREATE SCHEMA IF NOT EXISTS core AUTHORIZATION :"platform_role";
CREATE SCHEMA IF NOT EXISTS ml AUTHORIZATION :"platform_role";
ALTER SCHEMA raw OWNER TO :"platform_role";
ALTER SCHEMA core OWNER TO :"platform_role";
ALTER SCHEMA ml OWNER TO :"platform_role";
REVOKE ALL ON SCHEMA raw, core, ml FROM PUBLIC;

-- Tables created earlier by another role (e.g. before this script existed) move to the platform
-- role; their sequences and indexes follow them.
SELECT format(
           'ALTER %s %I.%I OWNER TO %I',
           CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
           n.nspname, c.relname, :'platform_role'
       )
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('raw', 'core', 'ml')
  AND c.relkind IN ('r', 'p', 'v', 'm')
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'platform_role') \gexec

-- Serving: the ml schema and the one table it serves. The IO manager replaces the table's rows
-- in place (DELETE + COPY), so the grant survives every daily write.
REVOKE ALL ON ALL TABLES IN SCHEMA raw, core, ml FROM :"serving_role";
GRANT USAGE ON SCHEMA ml TO :"serving_role";
SELECT format('GRANT SELECT ON ml.user_recommendations TO %I', :'serving_role')
WHERE to_regclass('ml.user_recommendations') IS NOT NULL \gexec

COMMIT;

SELECT to_regclass('ml.user_recommendations') IS NULL AS serving_table_missing \gset
\if :serving_table_missing
\echo 'ml.user_recommendations does not exist yet: run this script again after its first materialization to grant it to the serving role.'
\endif
