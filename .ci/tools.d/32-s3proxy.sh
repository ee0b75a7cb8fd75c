#!/usr/bin/env bash
# s3proxy (org.gaul:s3proxy, Apache-2.0): a real S3-compatible server with a filesystem backend.
#
# The S3 blob store tests (tests/integration/test_blob_s3.py) run the blob contract suite, the
# bounded-history archive and fault tests against it. One self-contained jar from Maven Central
# (classifier jar-with-dependencies), cached in ~/.cache/agent-mesh/s3proxy; it runs on the JDK the
# Kafka broker already needs.
#
# Sourced by .ci/run; exports MESH_S3PROXY_JAR and MESH_REQUIRE_S3=1 (the S3 tests then fail, not
# skip, without it).
_s3p_version="2.6.0"
_s3p_dir="${HOME}/.cache/agent-mesh/s3proxy"
_s3p_jar="$_s3p_dir/s3proxy-${_s3p_version}-jar-with-dependencies.jar"
if [[ -f "$_s3p_jar" ]]; then
    echo "s3proxy ${_s3p_version}: cached in $_s3p_dir"
else
    echo "s3proxy ${_s3p_version}: fetching from Maven Central"
    mkdir -p "$_s3p_dir"
    nice -n 10 mvn -q -B dependency:copy \
        "-Dartifact=org.gaul:s3proxy:${_s3p_version}:jar:jar-with-dependencies" "-DoutputDirectory=$_s3p_dir"
    echo "s3proxy: $(ls "$_s3p_dir")"
fi
if [[ ! -f "$_s3p_jar" ]]; then
    echo "s3proxy: $_s3p_jar missing after the fetch" >&2
    return 1 2>/dev/null || exit 1
fi
export MESH_S3PROXY_JAR="$_s3p_jar"
export MESH_REQUIRE_S3=1
