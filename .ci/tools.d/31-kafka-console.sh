#!/usr/bin/env bash
# kafka-tools jar (org.apache.kafka.tools.ConsoleProducer): a Kafka producer that is not ours.
#
# The ingress tests publish task events with Kafka's own console producer. Kafka 4 ships it in
# kafka-tools, which the broker's runtime jars (mesh dev install) do not include, so this fetches
# that one jar from Maven Central (same version as the broker's kafka-clients) into
# ~/.cache/agent-mesh/kafka-tools; its dependencies are the broker jars already resolved.
#
# Sourced by .ci/run after `mesh dev install`; exports MESH_KAFKA_TOOLS_DIR and
# MESH_REQUIRE_KAFKA_CONSOLE=1 (the ingress test then fails, not skips, without it).
_kt_libs="$("${PY:-python3}" -c 'from mesh.dev import DevConfig; print(DevConfig().kafka_libs_dir)')"
_kt_clients="$(ls "$_kt_libs"/kafka-clients-*.jar 2>/dev/null | head -n1)"
if [[ -z "$_kt_clients" ]]; then
    echo "kafka-tools: no kafka-clients jar in $_kt_libs (run mesh dev install first)" >&2
    return 1 2>/dev/null || exit 1
fi
_kt_version="$(basename "$_kt_clients" .jar)"
_kt_version="${_kt_version#kafka-clients-}"
_kt_dir="${HOME}/.cache/agent-mesh/kafka-tools"
if [[ -f "$_kt_dir/kafka-tools-${_kt_version}.jar" ]]; then
    echo "kafka-tools ${_kt_version}: cached in $_kt_dir"
else
    echo "kafka-tools ${_kt_version}: fetching from Maven Central"
    mkdir -p "$_kt_dir"
    mvn -q -B dependency:copy "-Dartifact=org.apache.kafka:kafka-tools:${_kt_version}" "-DoutputDirectory=$_kt_dir"
    echo "kafka-tools: $(ls "$_kt_dir")"
fi
export MESH_KAFKA_TOOLS_DIR="$_kt_dir"
export MESH_REQUIRE_KAFKA_CONSOLE=1
