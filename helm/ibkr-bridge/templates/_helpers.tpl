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

{{/* "true" when the Kafka sink authenticates with SASL (else empty). */}}
{{- define "ibkr-bridge.kafkaSasl" -}}
{{- if and (eq .Values.sink.kind "kafka") .Values.sink.kafka.sasl.enabled }}true{{ end -}}
{{- end -}}

{{/* "true" when the Redis sink reads its password from a Secret (else empty). */}}
{{- define "ibkr-bridge.redisSecret" -}}
{{- if and (eq .Values.sink.kind "redis") .Values.sink.redis.existingSecret }}true{{ end -}}
{{- end -}}

{{/* "true" when any Secret is mounted under secretsDir (else empty). */}}
{{- define "ibkr-bridge.mountsSecrets" -}}
{{- if or (include "ibkr-bridge.kafkaSasl" .) (include "ibkr-bridge.redisSecret" .) .Values.admin.existingSecret .Values.gateway.oauth.enabled }}true{{ end -}}
{{- end -}}

{{/* The port of a "host:port" or a URL; "default" when it names none. */}}
{{- define "ibkr-bridge.portOf" -}}
{{- $withoutScheme := regexReplaceAll "^[a-z]+://([^/@]*@)?" .address "" -}}
{{- $hostport := regexReplaceAll "/.*$" $withoutScheme "" -}}
{{- $parts := splitList ":" $hostport -}}
{{- if gt (len $parts) 1 }}{{ last $parts }}{{ else }}{{ .default }}{{ end -}}
{{- end -}}

{{/*
The bridge's own YAML configuration (bridge/config.py: gateway, session, subscriptions, sink,
delivery, admin, logging), rendered from values. Secrets appear only as *_file paths under
secretsDir, where workload.yaml mounts them; the Kafka SASL username comes from the environment.
*/}}
{{- define "ibkr-bridge.config" -}}
{{- $v := .Values -}}
{{- $secrets := include "ibkr-bridge.secretsDir" . -}}
{{- if and $v.gateway.insecureTls (not $v.ibeam.enabled) -}}
{{- fail (printf "gateway.insecureTls turns TLS verification off, which the bridge allows only for the IBeam sidecar on loopback (ibeam.enabled), not %s: set gateway.ca.existingSecret or gateway.ca.existingConfigMap to the gateway's CA instead" $v.gateway.url) -}}
{{- end -}}
{{- if and $v.gateway.ca.existingSecret $v.gateway.ca.existingConfigMap -}}
{{- fail "gateway.ca: set existingSecret or existingConfigMap, not both" -}}
{{- end -}}
{{- $hasCa := or $v.gateway.ca.existingSecret $v.gateway.ca.existingConfigMap -}}
{{- if and $v.gateway.insecureTls $hasCa -}}
{{- fail "gateway.insecureTls and gateway.ca: verify against the CA, or turn verification off" -}}
{{- end -}}
{{- /* The IBeam sidecar answers on loopback with its self-signed certificate: accepted unless a CA is given. */ -}}
{{- $gateway := dict
      "url" (ternary "https://localhost:5000" $v.gateway.url $v.ibeam.enabled)
      "insecure_tls" (or $v.gateway.insecureTls (and $v.ibeam.enabled (not $hasCa))) -}}
{{- if $hasCa -}}
{{- $_ := set $gateway "ca_file" (printf "%s/%s" (include "ibkr-bridge.gatewayCaDir" .) $v.gateway.ca.key) -}}
{{- end -}}
{{- if $v.gateway.oauth.enabled -}}
{{- $gateway = dict
      "mode" "oauth"
      "url" $v.gateway.oauth.url
      "oauth_file" (printf "%s/oauth/oauth.json" $secrets) -}}
{{- end -}}
{{- with $v.gateway.account -}}
{{- $_ := set $gateway "account" . -}}
{{- end -}}
{{- if $v.gateway.compete -}}
{{- $_ := set $gateway "compete" true -}}
{{- end -}}
{{- $session := dict
      "stale_after_s" $v.gateway.heartbeatTimeoutS
      "tickle_interval_s" $v.gateway.tickleIntervalS -}}
{{- $md := $v.subscriptions.marketData -}}
{{- $marketData := dict "conids" $md.conids -}}
{{- with $md.fields -}}
{{- $_ := set $marketData "fields" . -}}
{{- end -}}
{{- $subscriptions := dict
      "market_data" $marketData
      "orders" $v.subscriptions.orders
      "executions" $v.subscriptions.executions
      "pnl" $v.subscriptions.pnl -}}
{{- $sink := dict -}}
{{- if eq $v.sink.kind "kafka" -}}
{{- $k := $v.sink.kafka -}}
{{- $kafka := dict
      "compression" $k.compression
      "linger_ms" $k.lingerMs
      "enable_idempotence" $k.enableIdempotence
      "tls" $k.tls
      "create_topics" $k.topics.create -}}
{{- if $k.topics.create -}}
{{- $_ := set $kafka "topic_partitions" $k.topics.partitions -}}
{{- $_ := set $kafka "topic_replication" $k.topics.replication -}}
{{- end -}}
{{- if include "ibkr-bridge.kafkaSasl" . -}}
{{- $_ := set $kafka "sasl_mechanism" $k.sasl.mechanism -}}
{{- $_ := set $kafka "sasl_password_file" (printf "%s/kafka/%s" $secrets $k.sasl.passwordKey) -}}
{{- end -}}
{{- $_ := set $sink "url" (printf "kafka://%s" (join "," $k.bootstrapServers)) -}}
{{- $_ := set $sink "kafka" $kafka -}}
{{- else -}}
{{- $r := $v.sink.redis -}}
{{- $redis := dict "maxlen_events" $r.maxStreamLength -}}
{{- with $r.username -}}
{{- $_ := set $redis "username" . -}}
{{- end -}}
{{- if include "ibkr-bridge.redisSecret" . -}}
{{- $_ := set $redis "password_file" (printf "%s/redis/%s" $secrets $r.passwordKey) -}}
{{- end -}}
{{- $_ := set $sink "url" $r.url -}}
{{- $_ := set $sink "redis" $redis -}}
{{- end -}}
{{- $delivery := dict
      "max_batch_events" $v.delivery.maxBatchEvents
      "max_market_data_events" $v.delivery.maxMarketDataEvents
      "max_critical_events" $v.delivery.maxCriticalEvents
      "drain_timeout_s" $v.delivery.drainTimeoutS
      "spool_dir" "/var/lib/ibkr-bridge/spool"
      "spool_max_bytes" $v.spool.maxBytes -}}
{{- $admin := dict "host" "0.0.0.0" "port" $v.admin.port -}}
{{- if $v.admin.existingSecret -}}
{{- $_ := set $admin "token_file" (printf "%s/admin/%s" $secrets $v.admin.tokenKey) -}}
{{- end -}}
{{- $config := dict
      "gateway" $gateway
      "session" $session
      "subscriptions" $subscriptions
      "sink" $sink
      "delivery" $delivery
      "admin" $admin
      "logging" (dict "level" $v.log.level "format" $v.log.format) -}}
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

{{/* Where the gateway's CA (gateway.ca) is mounted. */}}
{{- define "ibkr-bridge.gatewayCaDir" -}}/var/run/ibkr-bridge/gateway-ca{{- end -}}
