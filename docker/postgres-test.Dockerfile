# A stand-in for the official `postgres:15` image, for `make test-docker` on machines that reach no image registry:
# Debian 12's postgresql-15 on the debootstrapped base that docker/build.sh imports. It takes the official image's
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB on first start (password auth over the network, scram-sha-256; a UTF8
# cluster: neocompile's store fails on initdb's default SQL_ASCII in the C locale, with a UnicodeEncodeError) and
# keeps its cluster in /var/lib/postgresql/data, so docker/compose.yaml runs with it too:
#   docker build -t neocompile-postgres:15 - < docker/postgres-test.Dockerfile
#   NEOCOMPILE_POSTGRES_IMAGE=neocompile-postgres:15 docker compose -f docker/compose.yaml up -d
# Only for tests: no tuning, no init scripts, none of the official image's other options.
ARG BASE=neocompile-base:bookworm
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres /var/run/postgresql /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data \
    POSTGRES_USER=postgres POSTGRES_DB=
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
CMD set -e; \
  if [ ! -s "$PGDATA/PG_VERSION" ]; then \
    [ -n "$POSTGRES_PASSWORD" ] || { echo "postgres-test: set POSTGRES_PASSWORD" >&2; exit 1; }; \
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pw; \
    initdb -U "$POSTGRES_USER" --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C >/dev/null; \
    rm -f /tmp/pw; \
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"; \
    db=${POSTGRES_DB:-$POSTGRES_USER}; \
    if [ "$db" != postgres ]; then echo "CREATE DATABASE \"$db\"" | postgres --single -D "$PGDATA" postgres >/dev/null; fi; \
  fi; \
  exec postgres -c listen_addresses='*'
