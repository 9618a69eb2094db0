{{/*
Object names are fixed: they are config/default's (and the Go operator's), so a release can take over an existing
install in place. Only the namespace follows the release.
*/}}
{{- define "cva.manager" -}}capi-vip-allocator-controller-manager{{- end -}}
{{- define "cva.certSecret" -}}capi-vip-allocator-runtime-extension-cert{{- end -}}
{{- define "cva.hookService" -}}capi-vip-allocator-runtime-extension{{- end -}}

{{/* Labels of every object but the Namespace: config/default's provider label plus Helm's standard labels. */}}
{{- define "cva.labels" -}}
cluster.x-k8s.io/provider: addon-vip-allocator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The selector: immutable on a Deployment, so exactly the kustomize install's (and the Go operator's). */}}
{{- define "cva.selectorLabels" -}}
control-plane: {{ include "cva.manager" . }}
{{- end -}}

{{- define "cva.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf "v%s" .Chart.AppVersion) }}
{{- end -}}
{{- end -}}
