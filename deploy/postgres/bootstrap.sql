-- Roles and database for baldur-audit. Idempotent: safe to run on every start.
-- Used by deploy/postgres.sh (local cluster) and by deploy/docker-compose.yml
-- (mounted into /docker-entrypoint-initdb.d). Run as a superuser with psql.
-- The superuser `postgres` gets its password from initdb --pwfile / POSTGRES_PASSWORD.
\set ON_ERROR_STOP on

SELECT 'CREATE ROLE baldur' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'baldur') \gexec
-- The application role: may log in and create databases (tests make scratch DBs), nothing more.
ALTER ROLE baldur WITH LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD 'baldur-local';

SELECT 'CREATE DATABASE baldur_audit OWNER baldur'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'baldur_audit') \gexec
ALTER DATABASE baldur_audit OWNER TO baldur;
