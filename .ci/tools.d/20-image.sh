# shellcheck shell=bash
# The agent-mesh image, built without a Docker daemon (image/build.py): a Debian bookworm rootfs from
# debootstrap, a venv with the project's dependencies (layer 1), the project's wheel (layer 2), packed
# as an OCI image with umoci and unpacked again into a bundle that runc starts in tests/deploy.
#
# Cached under ~/.cache/agent-mesh/image (one OCI layout + one unpacked bundle), keyed by a hash of
# image/image.toml, the wheel's dependencies and the wheel's contents: a second run with the same
# inputs does nothing; a code change rebuilds only layer 2. Sourced by .ci/run (uses $PY, as_root).

image_missing=()
for tool in debootstrap umoci runc; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x "/usr/sbin/$tool" ]] || image_missing+=("$tool")
done
if ((${#image_missing[@]})); then
    echo "installing: ${image_missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${image_missing[@]}"
fi
export PATH="$PATH:/usr/sbin:/sbin"
image_start=$SECONDS
MESH_IMAGE_BUNDLE="$(as_root env PATH="$PATH" "$PY" image/build.py build)"
echo "image bundle: $MESH_IMAGE_BUNDLE ($((SECONDS - image_start)) s)"
# tests/deploy/test_image.py fails (not skips) when the image or runc is missing.
export MESH_IMAGE_BUNDLE MESH_REQUIRE_IMAGE=1
