{{/* Names and labels. */}}
{{- define "ibkr-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ibkr-bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ibkr-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ibkr-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ibkr-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ibkr-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ibkr-bridge
{{- end -}}

{{- define "ibkr-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ibkr-bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ibkr-bridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where secrets are mounted as files; the bridge reads them through *_file keys. */}}
{{- define "ibkr-bridge.secretsDir" -}}/var/run/secrets/ibkr-bridge{{- end -}}

{{/* The port of a "host:port" or a URL; "default" when it names none. */}}
{{- define "ibkr-bridge.portOf" -}}
{{- $withoutScheme := regexReplaceAll "^[a-z]+://([^/@]*@)?" .address "" -}}
{{- $hostport := regexReplaceAll "/.*$" $withoutScheme "" -}}
{{- $parts := splitList ":" $hostport -}}
{{- if gt (len $parts) 1 }}{{ last $parts }}{{ else }}{{ .default }}{{ end -}}
{{- end -}}

{{/* The bridge's own YAML configuration, rendered from values. */}}
{{- define "ibkr-bridge.config" -}}
{{- $v := .Values -}}
{{- $secrets := include "ibkr-bridge.secretsDir" . -}}
{{- $gateway := dict
      "url" (ternary "https://localhost:5000" $v.gateway.url $v.ibeam.enabled)
      "insecure_tls" $v.gateway.insecureTls
      "heartbeat_timeout_s" $v.gateway.heartbeatTimeoutS
      "tickle_interval_s" $v.gateway.tickleIntervalS -}}
{{- $md := $v.subscriptions.marketData -}}
{{- $subscriptions := dict
      "market_data" (dict "conids" $md.conids "fields" $md.fields "stale_after_s" $md.staleAfterS)
      "orders" $v.subscriptions.orders
      "executions" $v.subscriptions.executions
      "pnl" $v.subscriptions.pnl -}}
{{- $k := $v.sink.kafka -}}
{{- $kafka := dict
      "bootstrap_servers" $k.bootstrapServers
      "compression" $k.compression
      "linger_ms" $k.lingerMs
      "acks" $k.acks
      "enable_idempotence" $k.enableIdempotence
      "tls" $k.tls -}}
{{- if $k.sasl.enabled -}}
{{- $_ := set $kafka "sasl" (dict
      "mechanism" $k.sasl.mechanism
      "username_file" (printf "%s/kafka/%s" $secrets $k.sasl.usernameKey)
      "password_file" (printf "%s/kafka/%s" $secrets $k.sasl.passwordKey)) -}}
{{- end -}}
{{- $redis := dict "url" $v.sink.redis.url "max_stream_length" $v.sink.redis.maxStreamLength -}}
{{- if $v.sink.redis.existingSecret -}}
{{- $_ := set $redis "password_file" (printf "%s/redis/%s" $secrets $v.sink.redis.passwordKey) -}}
{{- end -}}
{{- $sink := dict "kind" $v.sink.kind -}}
{{- $_ := set $sink $v.sink.kind (ternary $kafka $redis (eq $v.sink.kind "kafka")) -}}
{{- $delivery := dict
      "max_batch_events" $v.delivery.maxBatchEvents
      "max_market_data_events" $v.delivery.maxMarketDataEvents
      "max_critical_events" $v.delivery.maxCriticalEvents
      "drain_timeout_s" $v.delivery.drainTimeoutS
      "spool" (dict "dir" "/var/lib/ibkr-bridge/spool" "max_bytes" $v.spool.maxBytes) -}}
{{- $admin := dict "host" "0.0.0.0" "port" $v.admin.port -}}
{{- if $v.admin.existingSecret -}}
{{- $_ := set $admin "token_file" (printf "%s/admin/%s" $secrets $v.admin.tokenKey) -}}
{{- end -}}
{{- $config := dict
      "gateway" $gateway
      "subscriptions" $subscriptions
      "sink" $sink
      "delivery" $delivery
      "admin" $admin
      "log" (dict "level" $v.log.level "format" $v.log.format) -}}
{{- toYaml (mergeOverwrite $config (deepCopy $v.extraConfig)) -}}
{{- end -}}

{{/* The gateway's conf.yaml for the IBeam sidecar, with the allow-list from values. */}}
{{- define "ibkr-bridge.ibeamConf" -}}
ip2loc: "US"
proxyRemoteSsl: true
proxyRemoteHost: "https://api.ibkr.com"
listenPort: 5000
listenSsl: true
svcEnvironment: "v1"
sslCert: "vertx.jks"
sslPwd: "mywebapi"
authDelay: 3000
portalBaseURL: ""
serverOptions:
  blockedThreadCheckInterval: 1000000
  eventLoopPoolSize: 20
  workerPoolSize: 20
  maxWorkerExecuteTime: 100
  internalBlockingPoolSize: 20
cors:
  origin.allowed: "*"
  allowCredentials: false
webApps:
  - name: "demo"
    index: "index.html"
ips:
  allow:
{{- toYaml .Values.ibeam.allowList | nindent 4 }}
  deny: []
{{- end -}}
