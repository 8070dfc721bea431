"""Pod Security Standards, `restricted` profile, checked on a pod template.

Written against the documented controls
(https://kubernetes.io/docs/concepts/security/pod-security-standards/):
every baseline control plus the restricted ones. Returns one line per
violation; an empty list means the pod would be admitted in a namespace that
enforces `restricted`.
"""

from __future__ import annotations

from typing import Any

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}
APPARMOR_OK = {"RuntimeDefault", "Localhost"}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("containers", []), *spec.get("initContainers", []), *spec.get("ephemeralContainers", [])]


def baseline_violations(template: dict[str, Any]) -> list[str]:
    spec, meta = template.get("spec", {}), template.get("metadata", {}) or {}
    psc = spec.get("securityContext") or {}
    out = []
    for ns in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(ns):
            out.append(f"{ns} is true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("pod windowsOptions.hostProcess is true")
    for vol in spec.get("volumes", []):
        if "hostPath" in vol:
            out.append(f"volume {vol['name']} is a hostPath")
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and \
                not (value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"AppArmor annotation {key}={value}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl['name']} is not in the safe set")
    out += _context_baseline("pod", psc)
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        who = f"container {c['name']}"
        if sc.get("privileged"):
            out.append(f"{who} is privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{who} windowsOptions.hostProcess is true")
        extra = set((sc.get("capabilities") or {}).get("add", [])) - BASELINE_CAPABILITIES
        if extra:
            out.append(f"{who} adds capabilities {sorted(extra)}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"{who} uses hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{who} procMount {sc['procMount']}")
        out += _context_baseline(who, sc)
    return out


def _context_baseline(who: str, sc: dict[str, Any]) -> list[str]:
    out = []
    se = sc.get("seLinuxOptions") or {}
    if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
        out.append(f"{who} seLinuxOptions {se}")
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        out.append(f"{who} seccomp is Unconfined")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in APPARMOR_OK:
        out.append(f"{who} appArmorProfile {apparmor}")
    return out


def restricted_violations(template: dict[str, Any]) -> list[str]:
    spec = template.get("spec", {})
    psc = spec.get("securityContext") or {}
    out = baseline_violations(template)
    for vol in spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']} of type {sorted(kinds)} is not allowed")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser is 0")
    pod_nonroot = psc.get("runAsNonRoot") is True
    if psc.get("runAsNonRoot") is False:
        out.append("pod runAsNonRoot is false")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_OK:
        out.append(f"pod seccomp {pod_seccomp}")
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        who = f"container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{who} does not set allowPrivilegeEscalation: false")
        nonroot = sc.get("runAsNonRoot")
        if nonroot is False or (nonroot is None and not pod_nonroot):
            out.append(f"{who} may run as root (runAsNonRoot not true on pod or container)")
        if sc.get("runAsUser") == 0:
            out.append(f"{who} runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if (seccomp is None and pod_seccomp is None) or (seccomp is not None and seccomp not in SECCOMP_OK):
            out.append(f"{who} seccomp profile is {seccomp or 'unset'} (needs RuntimeDefault or Localhost)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            out.append(f"{who} does not drop ALL capabilities")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{who} adds capabilities beyond NET_BIND_SERVICE")
    return out
