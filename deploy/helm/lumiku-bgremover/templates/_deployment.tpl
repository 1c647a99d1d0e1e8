{{/*
One Deployment of the service's image in one role (ROLE=worker or ROLE=api).
Called with a dict: "root" (the chart context), "role", "replicas", "scaled" (an HPA or
KEDA owns the replica count: no `replicas`), "resources" and "weights" (the local
engine's weights: only workers run engines); optionally "command" (default "run":
ROLE is set for it only; the notifier runs `notifier`) and "env" (more variables, YAML).
*/}}
{{- define "lumiku.deployment" -}}
{{- $root := .root }}
{{- $args := . }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "lumiku.fullname" $root }}-{{ .role }}
  labels:
    {{- include "lumiku.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  {{- if not .scaled }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "lumiku.roleSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      annotations:
        checksum/config: {{ include "lumiku.configData" $root | sha256sum }}
        checksum/secret: {{ include "lumiku.secretData" $root | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "lumiku.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .role }}
        {{- include "lumiku.servingLabel" . | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      serviceAccountName: {{ include "lumiku.serviceAccountName" $root }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- if and .weights $root.Values.engines.local.enabled (eq $root.Values.engines.local.weights.source "image") }}
      initContainers:
        - name: weights
          image: {{ include "lumiku.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["cp", "-a", "/opt/lumiku/models/.", "/models/"]
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml $root.Values.initResources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: models
              mountPath: /models
      {{- end }}
      containers:
        - name: service
          image: {{ include "lumiku.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .command | default "run" | quote }}]
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          ports:
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
          envFrom:
            {{- include "lumiku.envFrom" (dict "configMap" (include "lumiku.fullname" $root) "secret" (include "lumiku.secretName" $root)) | nindent 12 }}
          env:
            {{- if eq (.command | default "run") "run" }}
            - name: ROLE
              value: {{ .role | quote }}
            {{- end }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraEnvVars }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /livez
              port: metrics
            {{- toYaml $root.Values.startupProbe | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /livez
              port: metrics
            {{- toYaml $root.Values.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            {{- toYaml $root.Values.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            {{- include "lumiku.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "lumiku.volumes" (dict "root" $root "weights" .weights) | nindent 8 }}
      {{- if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range $root.Values.topologySpread.topologyKeys }}
        - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
          topologyKey: {{ . }}
          whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "lumiku.roleSelectorLabels" $args | nindent 14 }}
        {{- end }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
