//go:build tools

// Package tools names the command the operator tooling builds, so that go.mod and go.sum pin it
// and its dependencies. The Prometheus Operator module is required in go.mod for its CRD files
// only (example/prometheus-operator-crd/): `go mod download` fetches it, nothing builds it.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
