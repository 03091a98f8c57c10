{{/* Names: the release's full name, at most 63 characters (a DNS label). */}}
{{- define "stockade.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stockade.fullname" -}}
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

{{/* Hook objects live only while `helm uninstall` runs; their names must not clash with the release's. */}}
{{- define "stockade.uninstallName" -}}
{{- printf "%s-uninstall" (include "stockade.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end -}}

{{- define "stockade.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stockade.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "stockade.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stockade.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stockade.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "stockade.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "stockade.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The host directories, mounted at the same paths inside the containers (CNI dirs under /host so the
image's own /opt and /etc stay as built). Shared by the agent DaemonSet and the uninstall cleanup.
*/}}
{{- define "stockade.cniBinMount" -}}/host/opt/cni/bin{{- end -}}
{{- define "stockade.cniConfMount" -}}/host/etc/cni/net.d{{- end -}}
{{- define "stockade.runtimeMount" -}}/host/opt/stockade{{- end -}}

{{/*
Command lines of the other parts, each in one place (their flags are the agent's and the CNI
installer's interface; see the README's install page):
- stockade.agentArgs: `stockade agent` (controller/cli/args.py);
- stockade.cniInstallArgs: `stockade-cni install` (controller/cni/install.py);
- stockade.uninstallNodeArgs: `stockade uninstall-node` (controller/cli/hostargs.py);
- `stockade install-runtime` is in daemonset.yaml (controller/hostruntime.py says why).
*/}}
{{- define "stockade.agentArgs" -}}
- agent
- --node=$(NODE_NAME)
- --listen=0.0.0.0:{{ .Values.agent.port }}
- --cni-socket={{ .Values.hostPaths.run }}/cni.sock
- --cni-timeout={{ .Values.agent.cniTimeoutSeconds }}
- --debounce-ms={{ .Values.agent.debounceMs }}
- --check-interval={{ .Values.agent.checkIntervalSeconds }}
{{- if not .Values.agent.overlay }}
- --no-overlay
{{- end }}
- --log-level={{ .Values.logging.level }}
{{- range .Values.agent.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "stockade.cniInstallArgs" -}}
{{- if le (float64 .Values.cni.agentTimeoutSeconds) (float64 .Values.agent.cniTimeoutSeconds) -}}
{{- fail (printf "cni.agentTimeoutSeconds (%v) must exceed agent.cniTimeoutSeconds (%v): the plugin must wait longer than the agent takes to answer" .Values.cni.agentTimeoutSeconds .Values.agent.cniTimeoutSeconds) -}}
{{- end -}}
- install
- --node-name=$(NODE_NAME)
- --bin-dir={{ include "stockade.cniBinMount" . }}
- --conf-dir={{ include "stockade.cniConfMount" . }}
- --conf-name={{ .Values.cni.confName }}
- --network-name={{ .Values.cni.networkName }}
- --agent-socket={{ .Values.hostPaths.run }}/cni.sock
- --agent-timeout={{ .Values.cni.agentTimeoutSeconds }}
- --python={{ .Values.cni.runtimeDir }}/python
- --ipam-dir={{ .Values.hostPaths.state }}/ipam
{{- if .Values.cni.mtu }}
- --mtu={{ .Values.cni.mtu }}
{{- end }}
{{- end -}}

{{- define "stockade.uninstallNodeArgs" -}}
- uninstall-node
- --cni-bin-dir={{ include "stockade.cniBinMount" . }}
- --cni-conf-dir={{ include "stockade.cniConfMount" . }}
- --cni-conf-name={{ .Values.cni.confName }}
- --state-dir={{ .Values.hostPaths.state }}
- --run-dir={{ .Values.hostPaths.run }}
- --overlay-device={{ .Values.overlay.device }}
- --runtime-dir={{ include "stockade.runtimeMount" . }}
{{- if .Values.uninstall.keepState }}
- --keep-state
{{- end }}
{{- end -}}

{{/*
The host directories (hostPath, created if missing): the agent's state and run dirs, and the CNI
dirs and plugin runtime the init containers write (the agent's pod has those only with
cni.install; the cleanup always, in case they were installed by hand).
*/}}
{{- define "stockade.stateVolumes" -}}
- name: state
  hostPath:
    path: {{ .Values.hostPaths.state }}
    type: DirectoryOrCreate
- name: run
  hostPath:
    path: {{ .Values.hostPaths.run }}
    type: DirectoryOrCreate
{{- end -}}

{{- define "stockade.cniVolumes" -}}
- name: cni-bin
  hostPath:
    path: {{ .Values.cni.binDir }}
    type: DirectoryOrCreate
- name: cni-conf
  hostPath:
    path: {{ .Values.cni.confDir }}
    type: DirectoryOrCreate
- name: cni-runtime
  hostPath:
    path: {{ .Values.cni.runtimeDir }}
    type: DirectoryOrCreate
{{- end -}}

{{/*
Root, but only with the capabilities the netlink calls need: NET_ADMIN (nftables, links, routes,
neighbour and FDB entries) and NET_RAW (raw sockets). Kubernetes grants added capabilities to
root only (a non-root user gets no ambient capabilities), so the agent runs as uid 0 with every
other capability dropped, no privilege escalation and a read-only root filesystem. Not privileged:
it never enters a pod's network namespace (the CNI plugin, run by the container runtime on the
host, does) and writes no sysctl.
*/}}
{{- define "stockade.netAdminSecurityContext" -}}
runAsUser: 0
runAsNonRoot: false
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  add: [NET_ADMIN, NET_RAW]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The CNI installer writes root-owned host directories: uid 0 as their owner needs no capability.
*/}}
{{- define "stockade.installerSecurityContext" -}}
runAsUser: 0
runAsNonRoot: false
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The cleanup DaemonSet `stockade uninstall-cluster` creates during `helm uninstall` (rendered here
so it has the release's image, paths and scheduling; see uninstall.yaml for the sequence).
*/}}
{{- define "stockade.cleanupDaemonSet" -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ include "stockade.uninstallName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "stockade.labels" . | nindent 4 }}
    app.kubernetes.io/component: cleanup
spec:
  selector:
    matchLabels:
      {{- include "stockade.selectorLabels" . | nindent 6 }}
      app.kubernetes.io/component: cleanup
  template:
    metadata:
      labels:
        {{- include "stockade.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/component: cleanup
    spec:
      # The node's own network stack: the table and the VXLAN device live there.
      hostNetwork: true
      automountServiceAccountToken: false
      priorityClassName: {{ .Values.priorityClassName | quote }}
      terminationGracePeriodSeconds: 1
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      initContainers:
        - name: uninstall-node
          image: {{ include "stockade.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: [stockade]
          args:
            {{- include "stockade.uninstallNodeArgs" . | nindent 12 }}
          securityContext:
            {{- include "stockade.netAdminSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: state
              mountPath: {{ .Values.hostPaths.state }}
            - name: run
              mountPath: {{ .Values.hostPaths.run }}
            - name: cni-bin
              mountPath: {{ include "stockade.cniBinMount" . }}
            - name: cni-conf
              mountPath: {{ include "stockade.cniConfMount" . }}
            - name: cni-runtime
              mountPath: {{ include "stockade.runtimeMount" . }}
      containers:
        # Ready once the init container succeeded: `stockade uninstall-cluster` waits for that.
        - name: done
          image: {{ include "stockade.image" . }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: [sleep, infinity]
          securityContext:
            runAsUser: 65534
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          resources:
            requests:
              cpu: 1m
              memory: 8Mi
      volumes:
        {{- include "stockade.stateVolumes" . | nindent 8 }}
        {{- include "stockade.cniVolumes" . | nindent 8 }}
{{- end -}}
