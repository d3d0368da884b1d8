-- Roles and database for baldur-audit. Idempotent: safe to run on every start (deploy/postgres.sh
-- runs it again whenever this file changes, so an existing cluster picks up new roles).
-- Used by deploy/postgres.sh (local cluster) and by deploy/docker-compose.yml
-- (mounted into /docker-entrypoint-initdb.d). Run as a superuser with psql.
-- The superuser `postgres` gets its password from initdb --pwfile / POSTGRES_PASSWORD.
--
-- Least privilege (README, "Append-only and the privilege model"): `baldur` owns the database
-- and the ledger's tables and is used by `baldur-audit init` only; the processes run as roles
-- that own nothing, to which `init` grants what each needs:
--   baldur_chainer   the chainer and the monitor (appends entries, moves the head forward)
--   baldur_reader    verify, replay, log, status, serve (reads only)
--   baldur_operator  retention and erasure (EXECUTE on baldur_prune / baldur_erase only)
-- The passwords are development-only values of the local stack.
\set ON_ERROR_STOP on

SELECT 'CREATE ROLE baldur' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'baldur') \gexec
-- The owner: may log in and create databases (tests make scratch DBs), nothing more.
ALTER ROLE baldur WITH LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD 'baldur-local';

SELECT format('CREATE ROLE %I', name)
    FROM (VALUES ('baldur_chainer'), ('baldur_reader'), ('baldur_operator')) AS runtime(name)
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
-- The runtime roles: log in, nothing else; what they may do on the tables comes from `init`.
ALTER ROLE baldur_chainer WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD 'baldur-chainer-local';
ALTER ROLE baldur_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD 'baldur-reader-local';
ALTER ROLE baldur_operator WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD 'baldur-operator-local';

SELECT 'CREATE DATABASE baldur_audit OWNER baldur'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'baldur_audit') \gexec
ALTER DATABASE baldur_audit OWNER TO baldur;
