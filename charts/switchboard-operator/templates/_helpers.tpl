{{/* The chart name (app.kubernetes.io/name and selectors). */}}
{{- define "switchboard-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names: the release name when it already names the chart, else "<release>-<chart>". */}}
{{- define "switchboard-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "switchboard-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Selector labels: what manifests/ uses. */}}
{{- define "switchboard-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard-operator.name" . }}
{{- end -}}

{{/* Labels of every object: the selector labels plus Helm's own (the manifests test ignores those four). */}}
{{- define "switchboard-operator.labels" -}}
{{ include "switchboard-operator.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Whether the operator is confined to its own namespace. */}}
{{- define "switchboard-operator.namespaced" -}}
{{- if eq .Values.rbac.scope "namespace" -}}true{{- else if eq .Values.rbac.scope "cluster" -}}{{- else -}}
{{- fail (printf "rbac.scope must be cluster or namespace, not %q" .Values.rbac.scope) -}}
{{- end -}}
{{- end -}}

{{/*
The operator's grants, shared by the ClusterRole and the namespace-scoped Role. Least privilege: exactly
the verbs and resources the operator uses, no wildcards; each rule names the code path that needs it.
*/}}
{{- define "switchboard-operator.rules" -}}
# both controllers watch ChatClusters; the load-set sync adds/removes its finalizer (merge patch)
- apiGroups: ["switchboard.dev"]
  resources: ["chatclusters"]
  verbs: ["get", "list", "watch", "patch"]
# status through server-side apply on the status subresource
- apiGroups: ["switchboard.dev"]
  resources: ["chatclusters/status"]
  verbs: ["patch"]
# owned objects: read first (get: applied and deleted only when this ChatCluster controls them),
# server-side apply (patch; create when the apply creates the object), watched as owned objects; the
# managed-Redis ones are deleted when a ChatCluster switches to External Redis; a deleted External
# ChatCluster's chat-node Deployment is scaled to 0 (patch) before its Redis keys are deleted
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# spec.monitoring: PodMonitors of chat-node and registry pods (applied, read first, deleted when turned
# off), only where the Prometheus Operator's CRDs are installed (found through API discovery)
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "create", "patch", "delete"]
# the Redis password: generated once (create), read (get), watched as metadata so a change starts a
# rotation; the rotation's own <name>-redis-applied Secret is written by server-side apply (patch).
# Kubernetes cannot narrow a grant to name patterns: patch covers every Secret the operator may see,
# and the operator patches only Secrets its ChatCluster controls.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# pod-deletion-cost on chat-node pods (list metadata, merge patch); a deleted External ChatCluster
# waits until its chat-node pods are gone (list); managed-Redis updates read the data pods' revision,
# readiness and IP (list)
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# managed-Redis updates restart one data pod at a time by eviction, so its PodDisruptionBudget holds
- apiGroups: [""]
  resources: ["pods/eviction"]
  verbs: ["create"]
# a grown spec.redis.managed.storage is carried to the data claims (list, merge patch); the data
# StatefulSet is then replaced with orphan propagation (statefulsets delete, above)
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "patch"]
# load-set sync follows the chat-node Services' endpoints
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# Events on ChatClusters (created, scaled, master changed, degraded)
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
