{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "agent-mesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects; a role's Deployment adds "-<role>", so keep room for it.
*/}}
{{- define "agent-mesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value: name-version.
*/}}
{{- define "agent-mesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Kubernetes recommended labels shared by every object of the release.
*/}}
{{- define "agent-mesh.labels" -}}
helm.sh/chart: {{ include "agent-mesh.chart" . }}
{{ include "agent-mesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agent-mesh
{{- end }}

{{/*
Labels that select the release's pods (a role adds app.kubernetes.io/component).
*/}}
{{- define "agent-mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-mesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount the pods run as.
*/}}
{{- define "agent-mesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agent-mesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Secret that holds the Anthropic API key: the chart's own when createSecret, else existingSecret.
*/}}
{{- define "agent-mesh.llmSecretName" -}}
{{- if .Values.llm.createSecret }}
{{- printf "%s-llm" (include "agent-mesh.fullname" .) }}
{{- else }}
{{- required "llm.existingSecret must name the Secret that holds the Anthropic API key (or set llm.createSecret)" .Values.llm.existingSecret }}
{{- end }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "agent-mesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
ConfigMap holding the workflow specs.
*/}}
{{- define "agent-mesh.workflowsConfigMap" -}}
{{- printf "%s-workflows" (include "agent-mesh.fullname" .) }}
{{- end }}

{{/*
Name of a role's workload (and PDB, ScaledObject, headless Service): <fullname>-<role>.
*/}}
{{- define "agent-mesh.roleName" -}}
{{- printf "%s-%s" (include "agent-mesh.fullname" .root) .role | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the chart's own Jaeger (jaeger.enabled).
*/}}
{{- define "agent-mesh.jaegerName" -}}
{{- printf "%s-jaeger" (include "agent-mesh.fullname" .) }}
{{- end }}

{{/*
OTLP endpoint the agents send to: the chart's Jaeger when enabled, else otel.endpoint.
*/}}
{{- define "agent-mesh.otelEndpoint" -}}
{{- if .Values.jaeger.enabled }}
{{- printf "http://%s.%s.svc:4318" (include "agent-mesh.jaegerName" .) .Release.Namespace }}
{{- else }}
{{- .Values.otel.endpoint }}
{{- end }}
{{- end }}
