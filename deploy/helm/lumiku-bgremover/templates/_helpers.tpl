{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "lumiku.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "lumiku.fullname" -}}
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

{{- define "lumiku.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lumiku.labels" -}}
helm.sh/chart: {{ include "lumiku.chart" . }}
{{ include "lumiku.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lumiku.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lumiku.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Marks the pods of both roles: the metrics Service and the NetworkPolicy select it. */}}
{{- define "lumiku.servingLabel" -}}
lumiku-bgremover/serving: "true"
{{- end }}

{{/* Pods of the service, whatever their role (the metrics Service's selector). */}}
{{- define "lumiku.serviceSelectorLabels" -}}
{{ include "lumiku.selectorLabels" . }}
{{ include "lumiku.servingLabel" . }}
{{- end }}

{{/* Pods of one role. Called with a dict: "root" (the chart context) and "role". */}}
{{- define "lumiku.roleSelectorLabels" -}}
{{ include "lumiku.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "lumiku.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lumiku.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lumiku.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the env-var secrets: the operator's, or the chart's. */}}
{{- define "lumiku.secretName" -}}
{{- default (include "lumiku.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Stream name of the work queue, as provisioning.StreamNames computes it. */}}
{{- define "lumiku.workStream" -}}
{{- printf "%s_WORK" .Values.nats.streamPrefix }}
{{- end }}

{{/*
Non-secret settings, by the environment variable names settings.py reads.
*/}}
{{- define "lumiku.configData" -}}
NATS_URL: {{ join "," .Values.nats.servers | quote }}
NATS_SUBJECT_PREFIX: {{ .Values.nats.subjectPrefix | quote }}
NATS_STREAM_PREFIX: {{ .Values.nats.streamPrefix | quote }}
NATS_STREAM_REPLICAS: {{ .Values.nats.streamReplicas | quote }}
NATS_DUPLICATE_WINDOW_S: {{ .Values.nats.duplicateWindowS | quote }}
NATS_PUBLISH_TIMEOUT_S: {{ .Values.nats.publishTimeoutS | quote }}
PROVISION_ON_START: {{ .Values.nats.provisionOnStart | quote }}
{{- if .Values.nats.auth.credsSecret.name }}
NATS_CREDS: "/etc/lumiku/nats-creds/{{ .Values.nats.auth.credsSecret.key }}"
{{- end }}
{{- if .Values.nats.tls.secretName }}
NATS_TLS_CA: "/etc/lumiku/nats-tls/{{ .Values.nats.tls.caKey }}"
{{- if .Values.nats.tls.clientCert }}
NATS_TLS_CERT: "/etc/lumiku/nats-tls/{{ .Values.nats.tls.certKey }}"
NATS_TLS_KEY: "/etc/lumiku/nats-tls/{{ .Values.nats.tls.keyKey }}"
{{- end }}
{{- end }}
DATABASE_POOL_MIN: {{ .Values.database.poolMin | quote }}
DATABASE_POOL_MAX: {{ .Values.database.poolMax | quote }}
STORAGE_BACKEND: "s3"
S3_ENDPOINT: {{ .Values.s3.endpoint | quote }}
S3_BUCKET: {{ .Values.s3.bucket | quote }}
S3_REGION: {{ .Values.s3.region | quote }}
S3_SECURE: {{ .Values.s3.secure | quote }}
S3_PRESIGN_TTL_S: {{ .Values.s3.presignTtlS | quote }}
S3_ALLOWED_BUCKETS: {{ join "," .Values.s3.allowedBuckets | quote }}
HF_ENDPOINT: {{ .Values.engines.hfEndpoint | quote }}
SEGMIND_ENDPOINT: {{ .Values.engines.segmindEndpoint | quote }}
SEGMIND_IMAGE_TRANSPORT: {{ .Values.engines.segmindImageTransport | quote }}
TIER_ROUTING: {{ .Values.engines.tierRouting | quote }}
ENGINE_TIMEOUT_S: {{ .Values.engines.timeoutS | quote }}
MODEL_CACHE_DIR: "/models"
{{- if .Values.engines.local.threads }}
LOCAL_ENGINE_THREADS: {{ .Values.engines.local.threads | quote }}
{{- end }}
BUSINESS_TIMEZONE: {{ .Values.config.businessTimezone | quote }}
LOG_LEVEL: {{ .Values.config.logLevel | quote }}
LOG_FORMAT: {{ .Values.config.logFormat | quote }}
ADMIN_SUBJECTS_ENABLED: {{ .Values.config.adminSubjectsEnabled | quote }}
MAX_IMAGES_PER_BATCH: {{ .Values.config.maxImagesPerBatch | quote }}
MAX_IMAGE_BYTES: {{ .Values.config.maxImageBytes | int64 | quote }}
MAX_BATCH_BYTES: {{ .Values.config.maxBatchBytes | int64 | quote }}
WORK_PARTITIONS: {{ .Values.work.partitions | quote }}
WORKER_CONCURRENCY: {{ .Values.work.concurrency | quote }}
INTERACTIVE_MAX_IMAGES: {{ .Values.work.interactiveMaxImages | quote }}
WORK_MAX_DELIVER: {{ .Values.work.maxDeliver | quote }}
WORK_ACK_WAIT_S: {{ .Values.work.ackWaitS | quote }}
WORK_DRAIN_S: {{ include "lumiku.drainSeconds" . | quote }}
METRICS_PORT: {{ .Values.metrics.port | quote }}
QUEUE_LAG_INTERVAL_S: {{ .Values.metrics.lagIntervalS | quote }}
HEALTH_TIMEOUT_S: {{ .Values.metrics.healthTimeoutS | quote }}
RETENTION_RESULTS_DAYS: {{ .Values.retention.resultsDays | quote }}
RETENTION_ARCHIVES_DAYS: {{ .Values.retention.archivesDays | quote }}
RETENTION_ORIGINALS_DAYS: {{ .Values.retention.originalsDays | quote }}
RETENTION_BATCHES_DAYS: {{ .Values.retention.batchesDays | quote }}
{{ include "lumiku.integrationsData" . }}
{{- end }}

{{/*
Which apps' events start removals, and where they are consumed (integration_settings.py):
INTEGRATION_APPS ("none" when the list is empty: a fresh install needs no other app's
stream), then <APP>_STREAM and <APP>_DURABLE for each name given.
*/}}
{{- define "lumiku.integrationsData" -}}
{{- $i := .Values.integrations }}
INTEGRATION_APPS: {{ join "," $i.apps | default "none" | quote }}
{{- range $app, $stream := $i.streams }}
{{- if $stream }}
{{ include "lumiku.appVariable" $app }}_STREAM: {{ $stream | quote }}
{{- end }}
{{- end }}
{{- range $app, $durable := $i.durables }}
{{- if $durable }}
{{ include "lumiku.appVariable" $app }}_DURABLE: {{ $durable | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* An app's variable prefix: avatar-creator -> AVATAR_CREATOR. */}}
{{- define "lumiku.appVariable" -}}
{{- . | upper | replace "-" "_" }}
{{- end }}

{{/* Settings of the notifier role only (SMTP_*, NOTIFY_*), as container env; SMTP_USER and
SMTP_PASSWORD come from the Secret with the others. */}}
{{- define "lumiku.notifierEnv" -}}
{{- $n := .Values.notifier }}
- name: SMTP_HOST
  value: {{ required "notifier.smtp.host is required when notifier.enabled" $n.smtp.host | quote }}
- name: SMTP_PORT
  value: {{ $n.smtp.port | quote }}
- name: SMTP_STARTTLS
  value: {{ $n.smtp.starttls | quote }}
{{- with $n.smtp.from }}
- name: SMTP_FROM
  value: {{ . | quote }}
{{- end }}
- name: SMTP_TIMEOUT_S
  value: {{ $n.smtp.timeoutS | quote }}
- name: NOTIFY_RETRY_S
  value: {{ $n.retryS | quote }}
- name: NOTIFY_RETRY_MAX_S
  value: {{ $n.retryMaxS | quote }}
{{- end }}

{{/* Secret settings given in values (only when no existingSecret is named). */}}
{{- define "lumiku.secretData" -}}
{{- $s := .Values.secrets }}
{{- range $key, $value := dict "DATABASE_URL" $s.databaseUrl "S3_ACCESS_KEY" $s.s3AccessKey "S3_SECRET_KEY" $s.s3SecretKey "NATS_USER" $s.natsUser "NATS_PASSWORD" $s.natsPassword "NATS_TOKEN" $s.natsToken "HF_TOKEN" $s.hfToken "SEGMIND_API_KEY" $s.segmindApiKey "SMTP_USER" $s.smtpUser "SMTP_PASSWORD" $s.smtpPassword }}
{{- if $value }}
{{ $key }}: {{ $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment of every container running the service's image. */}}
{{- define "lumiku.envFrom" -}}
- configMapRef:
    name: {{ .configMap }}
- secretRef:
    name: {{ .secret }}
{{- end }}

{{/* Volumes of every pod of the image: writable /tmp and /models, NATS files.
Called with a dict: "root" (the chart context) and "weights" (mount the weights claim). */}}
{{- define "lumiku.volumes" -}}
{{- $v := .root.Values }}
- name: tmp
  emptyDir:
    sizeLimit: {{ $v.tmpSizeLimit }}
- name: models
{{- if and .weights $v.engines.local.enabled (eq $v.engines.local.weights.source "volume") }}
  persistentVolumeClaim:
    claimName: {{ required "engines.local.weights.existingClaim is required with source volume" $v.engines.local.weights.existingClaim }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ $v.engines.local.weights.cacheSizeLimit }}
{{- end }}
{{- if $v.nats.auth.credsSecret.name }}
- name: nats-creds
  secret:
    secretName: {{ $v.nats.auth.credsSecret.name }}
{{- end }}
{{- if $v.nats.tls.secretName }}
- name: nats-tls
  secret:
    secretName: {{ $v.nats.tls.secretName }}
{{- end }}
{{- end }}

{{- define "lumiku.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: models
  mountPath: /models
{{- if .Values.nats.auth.credsSecret.name }}
- name: nats-creds
  mountPath: /etc/lumiku/nats-creds
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.secretName }}
- name: nats-tls
  mountPath: /etc/lumiku/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/*
WORK_DRAIN_S: how long a stopping worker lets its in-flight items finish. The pod's grace
period less 15 s, which the worker keeps for returning fetched messages and closing.
*/}}
{{- define "lumiku.drainSeconds" -}}
{{- sub (int .Values.terminationGracePeriodSeconds) 15 }}
{{- end }}

{{/*
The grace period must outlast the longest in-flight item: the drain it leaves the worker
must exceed one engine call (engines.timeoutS), so a call under way at SIGTERM finishes.
*/}}
{{- define "lumiku.checkGracePeriod" -}}
{{- $least := add (int .Values.engines.timeoutS) 15 }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $least) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed engines.timeoutS + 15 (%d): an in-flight item would be killed" (int .Values.terminationGracePeriodSeconds) (int $least)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled (HPA) and keda.enabled are mutually exclusive: choose one" }}
{{- end }}
{{- if ne (empty .Values.secrets.smtpUser) (empty .Values.secrets.smtpPassword) }}
{{- fail "secrets.smtpUser and secrets.smtpPassword go together: set both or neither" }}
{{- end }}
{{- if ne (empty .Values.secrets.natsUser) (empty .Values.secrets.natsPassword) }}
{{- fail "secrets.natsUser and secrets.natsPassword go together: set both or neither" }}
{{- end }}
{{- $logins := compact (list .Values.nats.auth.credsSecret.name .Values.secrets.natsUser .Values.secrets.natsToken) }}
{{- if gt (len $logins) 1 }}
{{- fail "use one NATS login: nats.auth.credsSecret, secrets.natsUser/natsPassword or secrets.natsToken" }}
{{- end }}
{{- end }}
