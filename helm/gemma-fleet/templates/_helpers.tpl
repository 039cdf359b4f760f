{{/* Names, labels and shared pod fragments. */}}

{{- define "gemma-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Kept to 40 characters: KubeRay derives the RayCluster's name (base plus a
random suffix) and its Services' names from it, and each must stay a 63-character DNS label.
*/}}
{{- define "gemma-fleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gemma-fleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gemma-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gemma-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gemma-fleet.labels" -}}
helm.sh/chart: {{ include "gemma-fleet.chart" . }}
{{ include "gemma-fleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gemma-fleet
{{- end }}

{{/* Object names. */}}
{{- define "gemma-fleet.rayservice" -}}{{ include "gemma-fleet.fullname" . }}{{- end }}
{{- define "gemma-fleet.serveService" -}}{{ include "gemma-fleet.fullname" . }}-serve-svc{{- end }}
{{- define "gemma-fleet.redisName" -}}{{ include "gemma-fleet.fullname" . }}-redis{{- end }}
{{- define "gemma-fleet.autoscalerName" -}}{{ include "gemma-fleet.fullname" . }}-autoscaler{{- end }}

{{- /* The longest drain_timeout_s of the pools, whole seconds (the fleet file's default: 600 s):
how long a replica being removed keeps answering. */}}
{{- define "gemma-fleet.longestDrainSeconds" -}}
{{- $longestDrain := 0.0 }}
{{- range $mp := .Values.fleet.model_pools }}
{{- $drain := 600.0 }}
{{- if and (hasKey $mp "drain_timeout_s") (not (kindIs "invalid" $mp.drain_timeout_s)) }}{{ $drain = float64 $mp.drain_timeout_s }}{{ end }}
{{- $longestDrain = maxf $longestDrain $drain }}
{{- end }}
{{- ceil $longestDrain | int }}
{{- end }}

{{- define "gemma-fleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Secret names and keys: the user's existingSecret, else the chart's own. A credential's values
block has existingSecret and existingSecretKey; call with (list $ block suffix) for the name
(the chart's own: <fullname>-<suffix>) and (list block key) for the key (the chart's own: key).
*/}}
{{- define "gemma-fleet.credentialSecretName" -}}
{{- $block := index . 1 }}
{{- default (printf "%s-%s" (include "gemma-fleet.fullname" (index . 0)) (index . 2)) $block.existingSecret }}
{{- end }}
{{- define "gemma-fleet.credentialSecretKey" -}}
{{- $block := index . 0 }}
{{- if $block.existingSecret }}{{ $block.existingSecretKey }}{{ else }}{{ index . 1 }}{{ end }}
{{- end }}
{{- define "gemma-fleet.adminSecretName" -}}
{{- include "gemma-fleet.credentialSecretName" (list . .Values.admin "admin") }}
{{- end }}
{{- define "gemma-fleet.adminSecretKey" -}}
{{- include "gemma-fleet.credentialSecretKey" (list .Values.admin "admin-key") }}
{{- end }}
{{- define "gemma-fleet.metricsSecretName" -}}
{{- include "gemma-fleet.credentialSecretName" (list . .Values.gateway.metrics "metrics") }}
{{- end }}
{{- define "gemma-fleet.metricsSecretKey" -}}
{{- include "gemma-fleet.credentialSecretKey" (list .Values.gateway.metrics "metrics-token") }}
{{- end }}
{{- define "gemma-fleet.teamsSecretName" -}}
{{- default (printf "%s-teams" (include "gemma-fleet.fullname" .)) .Values.teams.existingSecret }}
{{- end }}
{{- define "gemma-fleet.teamsSecretKey" -}}
{{- if .Values.teams.existingSecret }}{{ .Values.teams.existingSecretKey }}{{ else }}teams.yaml{{ end }}
{{- end }}
{{- define "gemma-fleet.teamsEnabled" -}}
{{- if or .Values.teams.existingSecret .Values.teams.bootstrap }}true{{ end }}
{{- end }}

{{/* Redis: where the gateway finds it, and which Secret (if any) holds its password. */}}
{{- define "gemma-fleet.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s.%s.svc:6379/0" (include "gemma-fleet.redisName" .) .Release.Namespace }}
{{- else }}
{{- .Values.redis.external.url }}
{{- end }}
{{- end }}
{{- define "gemma-fleet.redisSecretName" -}}
{{- if .Values.redis.enabled }}
{{- default (include "gemma-fleet.redisName" .) .Values.redis.auth.existingSecret }}
{{- else }}
{{- .Values.redis.external.existingSecret }}
{{- end }}
{{- end }}
{{- define "gemma-fleet.redisSecretKey" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretKey }}{{ else }}redis-password{{ end }}
{{- else }}
{{- .Values.redis.external.existingSecretKey }}
{{- end }}
{{- end }}

{{/*
A Secret value that stays the same across upgrades: the live Secret's value when `lookup` can
see it (helm install/upgrade against a cluster), else a new random one. `helm template` and
`--dry-run=client` have no cluster, so they always show a fresh random value.
Call with (list $ secretName key length).
*/}}
{{- define "gemma-fleet.stableRandom" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $key := index . 2 }}
{{- $len := index . 3 }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $name }}
{{- if and $existing (hasKey (default dict $existing.data) $key) }}
{{- index $existing.data $key | b64dec }}
{{- else }}
{{- randAlphaNum $len }}
{{- end }}
{{- end }}

{{/*
A Secret the chart owns holding one credential: `value` when set, else a stableRandom one of
`length` characters. `helm.sh/resource-policy: keep`: `helm uninstall` leaves it, for the
clients and data that depend on it. Call with (list $ name key value length component).
*/}}
{{- define "gemma-fleet.ownedSecret" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $key := index . 2 }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  labels:
    {{- include "gemma-fleet.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ index . 5 }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  {{ $key }}: {{ (default (include "gemma-fleet.stableRandom" (list $root $name $key (index . 4))) (index . 3)) | b64enc | quote }}
{{- end }}

{{/*
The gateway's credentials (its admin key and metrics token, and the Redis password it logs in
with) reach their pods as files of Secret volumes, not as variables: the kubelet updates a
mounted Secret's files in place (never through a subPath mount) within about a minute of a
change, and the gateway and the autoscaler follow the files, so a rotation needs no restart
(docs/helm.md "Rotating credentials"). A variable from a secretKeyRef is fixed until the
container restarts, which for the Ray pods means a new Ray cluster.
The Hugging Face token goes the same way (HF_TOKEN_PATH, which huggingface_hub reads at each
download), so replicas started on a running pod after a rotation download with the new token.
Call credentialFile/credentialMount/credentialVolume with
(list $ "admin"|"metrics"|"redis"|"huggingface").
*/}}
{{- define "gemma-fleet.credentialFile" -}}
{{- $what := index . 1 -}}
/var/run/secrets/gemma-fleet/{{ $what }}/{{ get (dict "admin" "admin-key" "metrics" "metrics-token" "redis" "redis-password" "huggingface" "token") $what }}
{{- end }}
{{- define "gemma-fleet.huggingfaceSecretName" -}}
{{ .Values.huggingface.existingSecret }}
{{- end }}
{{- define "gemma-fleet.huggingfaceSecretKey" -}}
{{ .Values.huggingface.existingSecretKey }}
{{- end }}
{{- define "gemma-fleet.credentialMount" -}}
{{- $what := index . 1 -}}
- name: {{ $what }}-credential
  mountPath: /var/run/secrets/gemma-fleet/{{ $what }}
  readOnly: true
{{- end }}
{{- define "gemma-fleet.credentialVolume" -}}
{{- $root := index . 0 }}
{{- $what := index . 1 -}}
- name: {{ $what }}-credential
  secret:
    secretName: {{ include (printf "gemma-fleet.%sSecretName" $what) $root }}
    defaultMode: 0440
    items:
      - key: {{ include (printf "gemma-fleet.%sSecretKey" $what) $root }}
        path: {{ base (include "gemma-fleet.credentialFile" .) }}
{{- end }}

{{/*
GEMMA_FLEET_METRICS_TOKEN_FILE: the gateway asks the token in it of every scrape of its
/metrics, and the autoscaler, which scrapes it, sends it.
*/}}
{{- define "gemma-fleet.metricsTokenEnv" -}}
- name: GEMMA_FLEET_METRICS_TOKEN_FILE
  value: {{ include "gemma-fleet.credentialFile" (list . "metrics") }}
{{- end }}

{{/*
Environment every Ray pod gets: Ray Serve tuning, the gateway's team settings and the HF token
(credentials as files of the Secret volumes above, never a value) and OpenTelemetry. Ray's worker processes inherit the raylet's environment, so
the gateway replicas and engines see these wherever they are placed.
*/}}
{{/*
"true" when Serve's HTTP front is HAProxy, else empty. On unless set false: an upgrade that
reuses an older release's values, which lack the key, gets it too.
*/}}
{{- define "gemma-fleet.haproxyIngress" -}}
{{- if not (eq .Values.ray.haproxyIngress false) }}true{{ end }}
{{- end }}

{{- define "gemma-fleet.rayEnv" -}}
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: {{ if include "gemma-fleet.haproxyIngress" . }}"1"{{ else }}"0"{{ end }}
- name: RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S
  value: {{ .Values.gateway.clientIdleTimeoutS | default 60 | int | quote }}
{{- /* Headers Ray Serve reads as its own settings (a request timeout, a session id...) are
kept from clients before Serve reads them (platform/gateway/ray_headers.py). */}}
- name: RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
  value: gemma_fleet.gateway.ray_headers:middlewares
{{- /* After a reload (a gateway replica added or removed anywhere), the old HAProxy finishes
the answers it has for this long: the pools' longest drain, as long as any answer is promised.
Ray's 120 s cut longer answers. */}}
- name: RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S
  value: {{ include "gemma-fleet.longestDrainSeconds" . | quote }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
- name: HF_HOME
  value: /models/huggingface
- name: XDG_CACHE_HOME
  value: /home/ray/.cache
- name: REDIS_URL
  value: {{ include "gemma-fleet.redisUrl" . | quote }}
{{- if include "gemma-fleet.redisSecretName" . }}
- name: REDIS_PASSWORD_FILE
  value: {{ include "gemma-fleet.credentialFile" (list . "redis") }}
{{- end }}
- name: GEMMA_FLEET_ADMIN_KEY_FILE
  value: {{ include "gemma-fleet.credentialFile" (list . "admin") }}
{{ include "gemma-fleet.metricsTokenEnv" . }}
{{- if include "gemma-fleet.teamsEnabled" . }}
- name: GEMMA_FLEET_BOOTSTRAP_TEAMS
  value: /etc/gemma-fleet/teams/teams.yaml
{{- end }}
- name: GEMMA_FLEET_REDIS_DOWN
  value: {{ .Values.gateway.redisDown | quote }}
{{- if .Values.huggingface.existingSecret }}
- name: HF_TOKEN_PATH
  value: {{ include "gemma-fleet.credentialFile" (list . "huggingface") }}
{{- end }}
{{- with .Values.observability.otlp.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ $.Values.observability.otlp.serviceName | quote }}
{{- end }}
{{- range $name, $value := .Values.ray.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Writable paths under a read-only root filesystem, plus the teams file. */}}
{{- define "gemma-fleet.rayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home-cache
  mountPath: /home/ray/.cache
- name: dshm
  mountPath: /dev/shm
- name: model-cache
  mountPath: /models
{{ include "gemma-fleet.credentialMount" (list . "admin") }}
{{ include "gemma-fleet.credentialMount" (list . "metrics") }}
{{- if include "gemma-fleet.redisSecretName" . }}
{{ include "gemma-fleet.credentialMount" (list . "redis") }}
{{- end }}
{{- if .Values.huggingface.existingSecret }}
{{ include "gemma-fleet.credentialMount" (list . "huggingface") }}
{{- end }}
{{- if include "gemma-fleet.teamsEnabled" . }}
- name: teams
  mountPath: /etc/gemma-fleet/teams
  readOnly: true
{{- end }}
{{- end }}

{{/* Call with (list $ shmSize). */}}
{{- define "gemma-fleet.rayVolumes" -}}
{{- $root := index . 0 }}
{{- $shm := index . 1 }}
- name: tmp
  emptyDir: {}
- name: home-cache
  emptyDir: {}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $shm }}
{{- if $root.Values.ray.modelCache.existingClaim }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ $root.Values.ray.modelCache.existingClaim }}
{{- else }}
- name: model-cache
  emptyDir:
    sizeLimit: {{ $root.Values.ray.modelCache.sizeLimit }}
{{- end }}
{{ include "gemma-fleet.credentialVolume" (list $root "admin") }}
{{ include "gemma-fleet.credentialVolume" (list $root "metrics") }}
{{- if include "gemma-fleet.redisSecretName" $root }}
{{ include "gemma-fleet.credentialVolume" (list $root "redis") }}
{{- end }}
{{- if $root.Values.huggingface.existingSecret }}
{{ include "gemma-fleet.credentialVolume" (list $root "huggingface") }}
{{- end }}
{{- if include "gemma-fleet.teamsEnabled" $root }}
- name: teams
  secret:
    secretName: {{ include "gemma-fleet.teamsSecretName" $root }}
    defaultMode: 0440
    items:
      - key: {{ include "gemma-fleet.teamsSecretKey" $root }}
        path: teams.yaml
{{- end }}
{{- end }}
