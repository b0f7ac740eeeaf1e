#!/bin/sh
# Validates the manifests in deploy/ against the Kubernetes OpenAPI schemas of the versions K3s
# supports, offline, with kubernetes-validate (pip install kubernetes-validate). The same check runs
# in `cargo test --test it deploy` (tests/it/deploy.rs).
#
#   deploy/validate.sh                      # default versions
#   K8S_VERSIONS="1.33 1.34" deploy/validate.sh
#
# --strict rejects unknown fields. Custom resources (PodMonitor, and the Logging Operator kinds in
# parsers/rancher-logging/) have no schema there: kubernetes-validate prints a WARN for them and
# they are not validated, so only the built-in kinds are passed below.
set -eu
cd "$(dirname "$0")"
versions=${K8S_VERSIONS:-"1.32 1.33 1.34 1.35"}
command -v kubernetes-validate >/dev/null 2>&1 || {
    echo "kubernetes-validate not found: pip install kubernetes-validate" >&2
    exit 2
}
set --
for v in $versions; do set -- "$@" -k "$v"; done
# Every file of the kustomization, plus the K3s bundle.
files=$(sed -n 's/^  - \([A-Za-z0-9._-]*\.yaml\)$/\1/p' kustomization.yaml)
# A built-in kind with a mistyped kind/apiVersion only gets a WARN and exit code 0 from
# kubernetes-validate, so any WARN fails here too.
rc=0
# shellcheck disable=SC2086
out=$(kubernetes-validate --strict --quiet "$@" $files k3s-bundle.yaml 2>&1) || rc=$?
[ -n "$out" ] && printf '%s\n' "$out"
if [ "$rc" -ne 0 ] || printf '%s' "$out" | grep -q '^WARN'; then
    echo "deploy/: validation FAILED" >&2
    exit 1
fi
echo "deploy/: all manifests valid for Kubernetes $versions"
