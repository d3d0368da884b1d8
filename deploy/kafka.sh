#!/usr/bin/env bash
# Local single-node Apache Kafka 4.4.0 (KRaft, combined broker+controller) for development and tests.
#
#   deploy/kafka.sh install   materialise the broker classpath with Maven into .local/kafka-libs (once)
#   deploy/kafka.sh start     format storage once, launch the broker, wait until a client can talk to it
#   deploy/kafka.sh stop      SIGTERM, wait up to 30 s, then SIGKILL
#   deploy/kafka.sh status    exit 0 if the broker runs and answers a metadata request
#   deploy/kafka.sh consumer-groups ARGS...
#                             Kafka's own kafka-consumer-groups tool (ConsumerGroupCommand from
#                             kafka-tools) against this script's broker, e.g.
#                             `consumer-groups --describe --group baldur-audit-chainer`
#
# All state lives under .local/ in the repository. Listeners bind 127.0.0.1 only:
#   PLAINTEXT 127.0.0.1:29092 (clients), CONTROLLER 127.0.0.1:29093 (KRaft quorum).
# Environment overrides: BALDUR_KAFKA_HOME (state dir, default .local/kafka), BALDUR_KAFKA_PORT,
#   BALDUR_KAFKA_CONTROLLER_PORT (a second broker beside the first), KAFKA_START_TIMEOUT (s, default 90), KAFKA_HEAP_OPTS, JAVA,
#   KAFKA_CDS=0 to disable the class-data-sharing archive (see cds_opts).
# A secured broker (tests/support/secured.py) adds three:
#   BALDUR_KAFKA_EXTRA_CONFIG   a properties file appended to the generated server.properties; a
#                               later key wins, e.g. a SASL_SSL listener on BALDUR_KAFKA_PORT
#   BALDUR_KAFKA_SCRAM          SCRAM credentials created when the storage is formatted: a file with
#                               one `SCRAM-SHA-512=[name=NAME,password=PASSWORD]` per line
#   BALDUR_KAFKA_CLIENT_CONFIG  a librdkafka properties file the readiness checks connect with
# consumer-groups talks to 127.0.0.1:$BALDUR_KAFKA_PORT when that is set, else to $BALDUR_KAFKA_BOOTSTRAP,
#   else to 127.0.0.1:29092; a --bootstrap-server among ARGS wins over all three.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
LOCAL="$ROOT/.local"
LIBS="$LOCAL/kafka-libs"
LIBS_MARKER="$LIBS/.complete"
# A second, independent broker (fault tests restart theirs) sets BALDUR_KAFKA_HOME/PORT/CONTROLLER_PORT.
KDIR="${BALDUR_KAFKA_HOME:-$LOCAL/kafka}"
DATA="$KDIR/data"
CONF="$KDIR/server.properties"
CID_FILE="$KDIR/cluster-id"
PIDFILE="$KDIR/kafka.pid"
LOG="$KDIR/kafka.log"
POM="$ROOT/deploy/kafka/pom.xml"
LOG4J="$ROOT/deploy/kafka/log4j2.properties"
TOOLS_LOG4J="$ROOT/deploy/kafka/tools-log4j2.properties"
LIBS_LOCK="$LOCAL/kafka-libs.lock"
VENV_PY="$ROOT/.venv/bin/python"
# The client-side readiness checks (healthy, wait_healthy), run with $VENV_PY.
KAFKA_READY="$ROOT/deploy/tools/kafka_ready.py"
EXTRA_CONFIG="${BALDUR_KAFKA_EXTRA_CONFIG:-}"
SCRAM_FILE="${BALDUR_KAFKA_SCRAM:-}"
CLIENT_CONFIG="${BALDUR_KAFKA_CLIENT_CONFIG:-}"

HOST=127.0.0.1
PORT="${BALDUR_KAFKA_PORT:-29092}"
CONTROLLER_PORT="${BALDUR_KAFKA_CONTROLLER_PORT:-29093}"
BOOTSTRAP="$HOST:$PORT"
KAFKA_VERSION=4.4.0
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
JAVA="${JAVA:-${JAVA_HOME:+$JAVA_HOME/bin/}java}"

log() { echo "kafka: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers

# alive PID: the process exists and is not a zombie. Bash builtins only, like runs_our_broker:
# find_broker_jvm calls both for every process on the machine.
alive() {
    local stat
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat="${stat##*) }"  # the fields after "PID (COMM) "
    [[ -n "$stat" && "${stat%% *}" != Z ]]
}

# runs_our_broker PID: PID is alive and runs kafka.Kafka with our config (guards against pid reuse).
runs_our_broker() {
    local args
    alive "$1" || return 1
    { mapfile -d '' args <"/proc/$1/cmdline"; } 2>/dev/null || return 1
    [[ " ${args[*]} " == *" kafka.Kafka $CONF "* ]]
}

# The pid from the pidfile, if that process is alive and is our broker.
running_pid() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid="$(<"$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && runs_our_broker "$pid" || return 1
    echo "$pid"
}

# find_broker_jvm: the pid of a live process that runs kafka.Kafka with our config.
find_broker_jvm() {
    local dir
    for dir in /proc/[0-9]*; do
        runs_our_broker "${dir#/proc/}" && { echo "${dir#/proc/}"; return 0; }
    done
    return 1
}

# Health = a real client round trip (metadata request), not log scraping.
# Falls back to a TCP connect only when the project venv does not exist yet.
healthy() {
    if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null; then
        "$VENV_PY" "$KAFKA_READY" ${CLIENT_CONFIG:+--config "$CLIENT_CONFIG"} probe "$BOOTSTRAP" >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
    fi
}

ensure_java() {
    if ! command -v "$JAVA" >/dev/null 2>&1; then
        log "java not found; installing openjdk-17-jre-headless with apt-get"
        apt_install openjdk-17-jre-headless
        JAVA=java
    fi
}

apt_install() {
    [[ $EUID -eq 0 ]] || die "need root to apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# ---------------------------------------------------------------- install

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

# Complete = materialised from this very pom (a changed pom re-materialises) and the jars that the
# broker (kafka_2.13) and the consumer-groups tool (kafka-tools) live in are there.
libs_complete() {
    [[ -f "$LIBS_MARKER" && "$(<"$LIBS_MARKER")" == "$(pom_hash)" \
        && -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" && -f "$LIBS/kafka-tools-$KAFKA_VERSION.jar" ]]
}

cmd_install() {
    ensure_java
    if libs_complete; then
        [[ "${1:-}" == quiet ]] || log "classpath already materialised in ${LIBS#"$ROOT"/} ($(find "$LIBS" -maxdepth 1 -name "*.jar" | wc -l) jars)"
        return 0
    fi
    mkdir -p "$LOCAL"
    # Several brokers (the shared stack, fault tests' private ones) share this classpath and may
    # start at once: one installer at a time, and the others use what it materialised.
    local lock_fd
    exec {lock_fd}>"$LIBS_LOCK"
    flock -w 600 "$lock_fd" || die "another install still holds $LIBS_LOCK after 600 s"
    if libs_complete; then
        exec {lock_fd}>&-
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || { log "mvn not found; installing maven with apt-get"; apt_install maven; }
    log "materialising Kafka $KAFKA_VERSION classpath with Maven into ${LIBS#"$ROOT"/} ..."
    local t0=$SECONDS tmp="$LIBS.tmp.$$" old="$LIBS.old.$$"
    rm -rf "$tmp"
    mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2 \
        || { rm -rf "$tmp"; die "mvn dependency:copy-dependencies failed"; }
    local jar
    for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar"; do
        [[ -f "$tmp/$jar" ]] || { rm -rf "$tmp"; die "$jar missing after mvn"; }
    done
    [[ -n "$(compgen -G "$tmp/log4j-slf4j-impl-*.jar")" ]] || { rm -rf "$tmp"; die "log4j-slf4j-impl missing after mvn"; }
    # Swap by rename: a running broker keeps the jars it has open (unlinked files stay readable).
    [[ -e "$LIBS" ]] && mv "$LIBS" "$old"
    mv "$tmp" "$LIBS"
    rm -rf "$old"
    pom_hash >"$LIBS_MARKER"
    exec {lock_fd}>&-
    log "classpath ready: $(find "$LIBS" -maxdepth 1 -name "*.jar" | wc -l) jars in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- tools

# Kafka's kafka-consumer-groups (bin/kafka-consumer-groups.sh runs the same class) with a small heap
# and a quick-start JIT: it is a short-lived admin client. Its exit status is the tool's.
cmd_consumer_groups() {
    cmd_install quiet
    local bootstrap arg
    if [[ -n "${BALDUR_KAFKA_PORT:-}" ]]; then
        bootstrap="$BOOTSTRAP"
    else
        bootstrap="${BALDUR_KAFKA_BOOTSTRAP:-$BOOTSTRAP}"
    fi
    for arg in "$@"; do
        [[ "$arg" == --bootstrap-server || "$arg" == --bootstrap-server=* ]] && bootstrap=
    done
    exec "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Djava.net.preferIPv4Stack=true -Dlog4j2.configurationFile="file:$TOOLS_LOG4J" \
        -cp "$LIBS/*" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
        ${bootstrap:+--bootstrap-server "$bootstrap"} "$@"
}

# ---------------------------------------------------------------- start

# AppCDS (JDK 13+ dynamic archive): the first run records the loaded classes into an archive when
# the JVM exits (i.e. on `stop`); later starts map it and reach "ready" in about half the time
# (~2.5 s instead of ~5 s on 2 cores). The archive name is keyed on the JVM binary and the jar
# set, so a new JDK or a re-materialised classpath gets a fresh one. A stale or truncated archive
# is harmless: with the default -Xshare:auto the JVM just ignores it.
cds_opts() {
    # Off by default under CI (CI=true): a fresh clone starts once, so it would only pay the
    # recording cost (~+2 s start, ~+5 s stop) and never use the archive.
    local default=1
    [[ "${CI:-}" == true ]] && default=0
    [[ "${KAFKA_CDS:-$default}" == 1 ]] || return 0
    local key jsa
    key="$( { readlink -f "$(command -v "$JAVA")"; cat "$LIBS_MARKER"; } | sha256sum | cut -c1-12)"
    jsa="$KDIR/kafka-cds-$key.jsa"
    find "$KDIR" -maxdepth 1 -name 'kafka-cds-*.jsa' ! -name "${jsa##*/}" -delete 2>/dev/null || true
    if [[ -s "$jsa" ]]; then
        echo "-XX:SharedArchiveFile=$jsa -Xlog:cds*=off"
    else
        rm -f "$jsa"
        echo "-XX:ArchiveClassesAtExit=$jsa -Xlog:cds*=off"
    fi
}

write_config() {
    mkdir -p "$KDIR" "$DATA"
    local tmp="$CONF.tmp"
    cat >"$tmp" <<EOF
# Generated by deploy/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
# tests use short consumer session timeouts
group.min.session.timeout.ms=1000
num.recovery.threads.per.data.dir=1
EOF
    if [[ -n "$EXTRA_CONFIG" ]]; then
        # It may hold keystore and JAAS passwords: the generated file is for the owner only.
        chmod 600 "$tmp"
        { echo "# Appended from $EXTRA_CONFIG (BALDUR_KAFKA_EXTRA_CONFIG): a later key wins."
          cat "$EXTRA_CONFIG"; } >>"$tmp" || die "cannot read $EXTRA_CONFIG"
    fi
    mv "$tmp" "$CONF"
}

cluster_id() {
    if [[ ! -s "$CID_FILE" ]]; then
        # An already formatted log dir wins (e.g. the cluster-id file was deleted by hand).
        if [[ -f "$DATA/meta.properties" ]]; then
            sed -n 's/^cluster\.id=//p' "$DATA/meta.properties" >"$CID_FILE"
        else
            # The system python3: this runs before the venv exists.
            python3 "$ROOT/deploy/tools/kafka_cluster_id.py" >"$CID_FILE"
        fi
    fi
    cat "$CID_FILE"
}

format_storage() {
    [[ -f "$DATA/meta.properties" ]] && return 0
    local cid line scram=()
    cid="$(cluster_id)"
    if [[ -n "$SCRAM_FILE" ]]; then
        while IFS= read -r line || [[ -n "$line" ]]; do
            if [[ -n "$line" ]]; then scram+=(--add-scram "$line"); fi
        done <"$SCRAM_FILE" || die "cannot read $SCRAM_FILE"
    fi
    log "formatting KRaft storage (cluster id $cid, --standalone${SCRAM_FILE:+, $((${#scram[@]} / 2)) SCRAM credentials})"
    "$JAVA" -Xmx256m -Djava.net.preferIPv4Stack=true -Dlog4j2.configurationFile="file:$LOG4J" -cp "$LIBS/*" kafka.tools.StorageTool \
        format --standalone -t "$cid" -c "$CONF" "${scram[@]}" >>"$LOG" 2>&1 \
        || { tail -n 30 "$LOG" >&2; die "kafka-storage format failed (log: $LOG)"; }
}

# Wait until the broker answers a metadata request, the process dies, or START_TIMEOUT passes.
wait_healthy() {
    local pid="$1" rc=0 took
    if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import confluent_kafka' 2>/dev/null; then
        # One client polled every 0.2 s (short reconnect backoff): sub-second readiness detection
        # without paying a Python start-up per attempt. Ready = metadata answered AND the group
        # coordinator is available.
        took="$("$VENV_PY" "$KAFKA_READY" ${CLIENT_CONFIG:+--config "$CLIENT_CONFIG"} wait "$BOOTSTRAP" "$pid" "$START_TIMEOUT")" || rc=$?
    else
        log "no project venv yet: readiness = TCP port $PORT open (no client check)"
        local t0=$SECONDS next=5
        while ! healthy; do
            kill -0 "$pid" 2>/dev/null || { rc=2; break; }
            (( SECONDS - t0 >= START_TIMEOUT )) && { rc=3; break; }
            if (( SECONDS - t0 >= next )); then
                log "waiting for $BOOTSTRAP ... $((SECONDS - t0)) s"
                next=$((next + 5))
            fi
            sleep 0.5
        done
        took=$((SECONDS - t0))
    fi
    case $rc in
        0) log "ready on $BOOTSTRAP (pid $pid) after ${took} s"; return 0 ;;
        2) log "broker process $pid exited during start-up; last 30 log lines:"; rm -f "$PIDFILE" ;;
        3) log "not healthy after $START_TIMEOUT s; last 30 log lines:" ;;
        *) log "health check failed (rc $rc); last 30 log lines:" ;;
    esac
    tail -n 30 "$LOG" >&2
    return 1
}

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        if healthy; then
            log "already running (pid $pid) on $BOOTSTRAP"
            return 0
        fi
        log "process $pid is up but not answering yet; waiting"
        wait_healthy "$pid" || die "running broker (pid $pid) is not healthy; try: deploy/kafka.sh stop"
        return 0
    fi
    rm -f "$PIDFILE"
    cmd_install quiet
    write_config
    format_storage
    # Refuse to start if something else already holds our ports.
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null || (exec 3<>"/dev/tcp/$HOST/$CONTROLLER_PORT") 2>/dev/null; then
        die "port $PORT or $CONTROLLER_PORT on $HOST is already in use by another process"
    fi
    log "starting broker (log: ${LOG#"$ROOT"/})"
    # keep one previous log once it passes 20 MB
    if [[ -f "$LOG" && $(stat -c %s "$LOG") -gt 20000000 ]]; then mv -f "$LOG" "$LOG.1"; fi
    echo "==== $(date -Is) start" >>"$LOG"
    # setsid: own session, so a Ctrl-C in the terminal that ran `make` does not kill the broker.
    # In a non-interactive shell the background child is not a group leader, so setsid execs
    # in place and $! is the JVM's pid (checked by running_pid below).
    local cds
    cds="$(cds_opts)"
    # shellcheck disable=SC2086
    nohup setsid "$JAVA" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true $cds \
        -Djava.net.preferIPv4Stack=true \
        -Dlog4j2.configurationFile="file:$LOG4J" \
        -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    # Until nohup/setsid have exec'd the JVM (or it died): up to 30 s, since a loaded machine can
    # be slow to get there. Should setsid have forked after all, adopt the JVM that runs our
    # config (its cmdline names $CONF, so it cannot be another broker).
    local i jvm
    for ((i = 0; i < 300; i++)); do
        running_pid >/dev/null && break
        if jvm="$(find_broker_jvm)"; then
            echo "$jvm" >"$PIDFILE"
            log "tracking broker JVM pid $jvm (started via pid $pid)"
            pid="$jvm"
            break
        fi
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid" && ! running_pid >/dev/null; then
        log "pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
        die "pid $pid is not the broker JVM after 30 s; cannot track it"
    fi
    if ! wait_healthy "$pid"; then
        cmd_stop || true
        die "broker failed to start (log: $LOG)"
    fi
}

# ---------------------------------------------------------------- stop / status

# wait_exit PID TENTHS: wait up to TENTHS tenths of a second for PID to exit (1 if it did not).
wait_exit() {
    local i
    for ((i = 0; i < $2; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        rm -f "$PIDFILE"
        return 0
    fi
    log "stopping pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_exit "$pid" 300; then
        log "still alive after 30 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_exit "$pid" 50 || true
    fi
    rm -f "$PIDFILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        if healthy; then
            echo "kafka: running (pid $pid) on $BOOTSTRAP"
            return 0
        fi
        echo "kafka: process $pid alive but not answering on $BOOTSTRAP"
        return 1
    fi
    echo "kafka: not running"
    return 1
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    consumer-groups) shift; cmd_consumer_groups "$@" ;;
    *) echo "usage: $0 {install|start|stop|status|consumer-groups ARGS...}" >&2; exit 2 ;;
esac
