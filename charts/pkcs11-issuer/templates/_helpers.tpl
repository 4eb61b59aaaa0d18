{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "pkcs11-issuer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pkcs11-issuer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pkcs11-issuer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pkcs11-issuer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pkcs11-issuer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pkcs11-issuer.labels" -}}
helm.sh/chart: {{ include "pkcs11-issuer.chart" . }}
{{ include "pkcs11-issuer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pkcs11-issuer
{{- end }}

{{- define "pkcs11-issuer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pkcs11-issuer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "pkcs11-issuer.imageRef" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "pkcs11-issuer.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.config.clusterResourceNamespace }}
{{- end }}

{{- define "pkcs11-issuer.softhsmPinSecret" -}}
{{- default (printf "%s-softhsm-pin" (include "pkcs11-issuer.fullname" .)) .Values.softhsm.pin.existingSecret }}
{{- end }}

{{/* The SO PIN's key: always one in the Secret the chart makes; optional in an existing one. */}}
{{- define "pkcs11-issuer.softhsmSoPinKey" -}}
{{- if .Values.softhsm.pin.existingSecret }}
{{- .Values.softhsm.pin.soPinKey }}
{{- else }}
{{- default "so-pin" .Values.softhsm.pin.soPinKey }}
{{- end }}
{{- end }}

{{/* Paths shared by the operator and the SoftHSM sidecar. */}}
{{- define "pkcs11-issuer.configDir" -}}/etc/pkcs11-issuer{{- end }}
{{- define "pkcs11-issuer.softhsmSocketDir" -}}/run/p11-kit{{- end }}
{{- define "pkcs11-issuer.softhsmSocket" -}}/run/p11-kit/pkcs11.sock{{- end }}
{{- define "pkcs11-issuer.softhsmTokenDir" -}}/var/lib/softhsm/tokens{{- end }}
{{- define "pkcs11-issuer.softhsmPinDir" -}}/etc/softhsm-pin{{- end }}

{{/* The p11-kit server address the operator's p11-kit client connects to, or nothing. */}}
{{- define "pkcs11-issuer.p11kitAddress" -}}
{{- if eq .Values.hsm.mode "softhsm" }}
{{- printf "unix:path=%s" (include "pkcs11-issuer.softhsmSocket" .) }}
{{- else if eq .Values.hsm.mode "p11kitRemote" }}
{{- printf "unix:path=%s/%s" (trimSuffix "/" .Values.p11kitRemote.mountPath) .Values.p11kitRemote.socket }}
{{- end }}
{{- end }}

{{/* "true" when the operator runs with leader election, else empty. Checks the combination. */}}
{{- define "pkcs11-issuer.leaderElection" -}}
{{- $replicas := int .Values.replicaCount }}
{{- $enabled := .Values.leaderElection.enabled }}
{{- if kindIs "invalid" $enabled }}
{{- $enabled = gt $replicas 1 }}
{{- end }}
{{- if and (gt $replicas 1) (not $enabled) }}
{{- fail "replicaCount > 1 needs leader election: leave leaderElection.enabled unset (or true); without it every replica would issue and write at once" }}
{{- end }}
{{- if $enabled }}true{{ end }}
{{- end }}

{{/* Checks of values that the schema cannot express; included by the Deployment. */}}
{{- define "pkcs11-issuer.validate" -}}
{{- if and (eq .Values.hsm.mode "softhsm") (gt (int .Values.replicaCount) 1) }}
{{- fail "hsm.mode=softhsm runs one SoftHSM token per Pod, so replicas would not share keys: keep replicaCount at 1 (use hsm.mode=module or p11kitRemote for several replicas)" }}
{{- end }}
{{- if and (eq .Values.hsm.mode "module") (not .Values.module.modules) }}
{{- fail "hsm.mode=module needs module.modules: a name and the absolute path of the PKCS#11 library in the operator container, e.g. {cloudhsm: /opt/cloudhsm/lib/libcloudhsm_pkcs11.so}" }}
{{- end }}
{{- if and (eq .Values.hsm.mode "module") .Values.module.volume (not .Values.module.mountPath) }}
{{- fail "module.volume needs module.mountPath: where the volume is mounted in the operator container" }}
{{- end }}
{{- if and .Values.metrics.port (eq (int .Values.metrics.port) (int .Values.health.port)) }}
{{- fail "metrics.port and health.port must differ" }}
{{- end }}
{{- end }}

{{/* The operator configuration file (docs/operator.md), from the values and the mode. */}}
{{- define "pkcs11-issuer.config" -}}
{{- $mode := .Values.hsm.mode }}
{{- $modules := dict }}
{{- if eq $mode "module" }}
{{- range $name, $path := .Values.module.modules }}
{{- $_ := set $modules $name $path }}
{{- end }}
{{- else }}
{{- $_ := set $modules "p11kit" .Values.hsm.p11kitClient }}
{{- end }}
{{- $defaultModule := "" }}
{{- if eq (len $modules) 1 }}
{{- $defaultModule = keys $modules | first }}
{{- end }}
{{- $tokens := list }}
{{- if eq $mode "softhsm" }}
{{- $pin := dict "secret" (dict "name" (include "pkcs11-issuer.softhsmPinSecret" .) "key" .Values.softhsm.pin.key "namespace" .Release.Namespace) }}
{{- $token := dict "name" .Values.softhsm.tokenName "module" "p11kit" "uri" (printf "pkcs11:token=%s" .Values.softhsm.tokenLabel) "pin" $pin "maxSessions" .Values.softhsm.maxSessions }}
{{- if .Values.softhsm.grants }}
{{- $_ := set $token "grants" .Values.softhsm.grants }}
{{- end }}
{{- $tokens = append $tokens $token }}
{{- end }}
{{- range .Values.config.tokens }}
{{- $token := deepCopy . }}
{{- if and (not $token.module) $defaultModule }}
{{- $_ := set $token "module" $defaultModule }}
{{- end }}
{{- $tokens = append $tokens $token }}
{{- end }}
{{- $config := dict "modules" $modules "clusterResourceNamespace" (include "pkcs11-issuer.clusterResourceNamespace" .) }}
{{- if $tokens }}
{{- $_ := set $config "tokens" $tokens }}
{{- end }}
{{- $_ := set $config "concurrency" .Values.config.concurrency }}
{{- $_ := set $config "loginRetryInterval" .Values.config.loginRetryInterval }}
{{- $_ := set $config "keyCleanupTimeout" .Values.config.keyCleanupTimeout }}
{{- $_ := set $config "metrics" (dict "port" .Values.metrics.port) }}
{{- $_ := set $config "health" (dict "port" .Values.health.port) }}
{{- if include "pkcs11-issuer.leaderElection" . }}
{{- $election := .Values.leaderElection }}
{{- $_ := set $config "leaderElection" (dict "enabled" true "namespace" .Release.Namespace "leaseName" $election.leaseName "leaseDuration" $election.leaseDuration "renewDeadline" $election.renewDeadline "retryPeriod" $election.retryPeriod) }}
{{- end }}
{{- toYaml $config }}
{{- end }}
