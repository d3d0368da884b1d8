#!/usr/bin/env bash
# The Java producer example (examples/java-producer): build it, and run its tests, which check
# it against schemas/vectors/producer-v1.json and classification-v1.json.
#
#   deploy/java-producer.sh build   compile, run the Java tests, write target/classes and
#                                   target/lib (the runtime classpath); quick when nothing changed
#   deploy/java-producer.sh classpath
#                                   print the classpath to run io.baldur.audit.producer.AuditProducer
#
# Needs Java 17+ and Maven (Debian's openjdk-17-jdk-headless and maven; installed when missing).
# The first build downloads Apache Avro, kafka-clients and JUnit from Maven Central into ~/.m2;
# later builds run offline (-o). Idempotent; a lock keeps two test workers from building at once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PROJECT="$ROOT/examples/java-producer"
TARGET="$PROJECT/target"
STAMP="$TARGET/.built"
LOCK="$ROOT/.local/java-producer.lock"

log() { echo "java-producer: $*" >&2; }

ensure_tools() {
    if command -v java >/dev/null && command -v mvn >/dev/null; then
        return 0
    fi
    log "installing Java 17 and Maven (Debian packages)"
    apt-get install -y -q openjdk-17-jdk-headless maven >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q openjdk-17-jdk-headless maven >/dev/null; }
}

# Newer than the stamp: any source, the pom, the vectors or the Avro schema.
stale() {
    [[ -f "$STAMP" && -d "$TARGET/lib" ]] || return 0
    [[ -n "$(find "$PROJECT/pom.xml" "$PROJECT/src" "$ROOT/schemas/vectors" "$ROOT/schemas/avro" \
        -newer "$STAMP" -type f -print -quit)" ]]
}

build() {
    ensure_tools
    mkdir -p "$ROOT/.local"
    exec 9>"$LOCK"
    flock 9
    if ! stale; then
        return 0
    fi
    log "building and testing examples/java-producer"
    # Offline first (everything cached in ~/.m2); online when something is missing.
    if ! mvn -B -q -o -f "$PROJECT/pom.xml" package >"$ROOT/.local/java-producer-build.log" 2>&1; then
        mvn -B -q -f "$PROJECT/pom.xml" package >"$ROOT/.local/java-producer-build.log" 2>&1 || {
            tail -n 60 "$ROOT/.local/java-producer-build.log" >&2
            log "build failed (log: .local/java-producer-build.log)"
            exit 1
        }
    fi
    touch "$STAMP"
}

case "${1:-build}" in
    build) build ;;
    classpath) build && echo "$TARGET/classes:$TARGET/lib/*" ;;
    *) echo "usage: $0 build|classpath" >&2; exit 2 ;;
esac
