//go:build tools

// Package tools names the commands the real node builds, so that go.mod and go.sum pin
// them and their dependencies.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
