{{/*
The objects' name: the release's, or fullnameOverride. A release named
setlist-operator (the documented one) gives "setlist-operator", not
"setlist-operator-setlist-operator".
*/}}
{{- define "setlist-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The operator's pods are found by these. app.kubernetes.io/name is fixed:
the compute nodes' NetworkPolicy admits pods labelled
app.kubernetes.io/name=setlist-operator (the operator reads an unready
node's /readyz).
*/}}
{{- define "setlist-operator.selectorLabels" -}}
app.kubernetes.io/name: setlist-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "setlist-operator.labels" -}}
{{ include "setlist-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: setlist
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "setlist-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "setlist-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "setlist-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What the operator does to the resources of the namespaces it watches,
derived from operator/src (tests/tests/operator_rbac.rs holds the same list
with where each use is, and fails when they differ). The same rules go into
the ClusterRole (every namespace) or the watched namespace's Role.
*/}}
{{- define "setlist-operator.rules" -}}
# The resource itself: the controller lists and watches it (reconcile.rs
# Controller::new), and merge-patches its finalizers (set_finalizer).
- apiGroups: ["setlist.dev"]
  resources: ["recommenderclusters"]
  verbs: ["list", "watch", "patch"]
# Status by server-side apply (write_status: patch_status).
- apiGroups: ["setlist.dev"]
  resources: ["recommenderclusters/status"]
  verbs: ["patch"]
# Owned objects carry ownerReferences with blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift,
# hardened clusters) that needs update on the owner's finalizers.
- apiGroups: ["setlist.dev"]
  resources: ["recommenderclusters/finalizers"]
  verbs: ["update"]
# Owned and watched (Controller::owns): applied with server-side apply
# (patch; create where the object is new), orphans deleted (apply_kind);
# StatefulSets and Deployments are also listed for readiness (observe).
- apiGroups: ["apps"]
  resources: ["statefulsets", "deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Owned but not watched: applied and pruned the same way (apply_kind).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["list", "create", "patch", "delete"]
# Pods: watched (a pod's change is its cluster's), listed for health
# (cluster_pods), and a failed compute node's pod deleted so that its
# StatefulSet makes a fresh one (replace_failed). Never created.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
{{- if .Values.rbac.readKafkaSecrets }}
# The Secret named by spec.kafka.clientSecretName, read by name for the
# operator's own Kafka admin client (kafka_secret). No list, no watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
# Events on the clusters (kube's Recorder: create, then patch a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
