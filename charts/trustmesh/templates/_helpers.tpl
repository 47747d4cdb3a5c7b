{{/*
Name of the chart, overridable with nameOverride.
*/}}
{{- define "trustmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects: the release name when it already contains the
chart name (`helm install trustmesh ...` gives `trustmesh`), else <release>-<chart>. At most 54
characters, so that "<fullname>-injector" and "<fullname>-metrics" stay within 63.
*/}}
{{- define "trustmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the MutatingWebhookConfiguration (the operator keeps its caBundle current).
*/}}
{{- define "trustmesh.injectorName" -}}
{{- printf "%s-injector" (include "trustmesh.fullname" .) }}
{{- end }}

{{- define "trustmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "trustmesh.labels" -}}
helm.sh/chart: {{ include "trustmesh.chart" . }}
{{ include "trustmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trustmesh
{{- end }}

{{/*
Labels that select the operator's pods.
*/}}
{{- define "trustmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trustmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trustmesh.operatorImage" -}}
{{- printf "%s:%s" .Values.image.operator.repository (.Values.image.operator.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "trustmesh.sidecarImage" -}}
{{- printf "%s:%s" .Values.image.sidecar.repository (.Values.image.sidecar.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The Secret holding the CA: the user's (ca.existingSecret) or the one the operator generates.
*/}}
{{- define "trustmesh.caSecretName" -}}
{{- .Values.ca.existingSecret | default .Values.ca.secretName }}
{{- end }}

{{/*
Seconds in a duration written like 1h30m (the schema has already checked the form).
*/}}
{{- define "trustmesh.seconds" -}}
{{- $h := regexFind "[0-9]+h" . | trimSuffix "h" | default "0" | int }}
{{- $m := regexFind "[0-9]+m" . | trimSuffix "m" | default "0" | int }}
{{- $s := regexFind "[0-9]+s" . | trimSuffix "s" | default "0" | int }}
{{- add (mul $h 3600) (mul $m 60) $s }}
{{- end }}

{{/*
Checks across values that the JSON schema cannot express; fails the render with a message.
*/}}
{{- define "trustmesh.validate" -}}
{{- $def := include "trustmesh.seconds" .Values.certificates.defaultTtl | int }}
{{- $max := include "trustmesh.seconds" .Values.certificates.maxTtl | int }}
{{- if or (lt $def 300) (gt $def 86400) }}
{{- fail (printf "certificates.defaultTtl=%s: must be between 5m and 24h" .Values.certificates.defaultTtl) }}
{{- end }}
{{- if or (lt $max 300) (gt $max 86400) }}
{{- fail (printf "certificates.maxTtl=%s: must be between 5m and 24h" .Values.certificates.maxTtl) }}
{{- end }}
{{- if gt $def $max }}
{{- fail (printf "certificates.defaultTtl=%s is longer than certificates.maxTtl=%s" .Values.certificates.defaultTtl .Values.certificates.maxTtl) }}
{{- end }}
{{- end }}

{{/*
What every injection webhook entry shares (templates/webhook.yaml).
*/}}
{{- define "trustmesh.webhookCommon" -}}
admissionReviewVersions: ["v1"]
sideEffects: None
# Fail closed by default (see webhook.failurePolicy in values.yaml): a pod that should be meshed
# must not start un-meshed. Two replicas, anti-affinity and a PodDisruptionBudget keep the
# injector available; `Ignore` is there for clusters that prefer availability.
failurePolicy: {{ .Values.webhook.failurePolicy }}
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
matchPolicy: Equivalent
# The sidecar is added once; later webhooks' changes do not need it to run again.
reinvocationPolicy: Never
clientConfig:
  # caBundle is left out on purpose: the injector serves a certificate from the mesh CA, and
  # the operator writes that CA into the caBundle of every webhook of this configuration at
  # start and keeps it current when the CA rotates. Helm never sets it, so an upgrade does not
  # reset it.
  service:
    name: {{ include "trustmesh.fullname" . }}
    namespace: {{ .Release.Namespace }}
    path: /inject
    port: 443
rules:
  - operations: ["CREATE"]
    apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    scope: Namespaced
{{- end }}
