"""Pod Security Standards, `restricted` profile, checked on a pod template.

Written against the documented controls
(https://kubernetes.io/docs/concepts/security/pod-security-standards/):
every baseline control plus the restricted ones. A template is
`{"metadata": ..., "spec": <PodSpec>}` with camelCase fields. Each finding
names its control and a message that starts with the field path inside the
template; no findings means the pod would be admitted in a namespace that
enforces `restricted`. Unknown values (preview) are skipped, not reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .props import UNKNOWN, each, get, is_unknown, number
from .workloads import containers

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
POD = "spec.securityContext"


@dataclass(frozen=True)
class Finding:
    control: str  # the PSS control, e.g. "hostPathVolumes", "runAsNonRoot"
    message: str  # "<field path>: <what is wrong>; <how to fix>"


def baseline_findings(template: dict[str, Any]) -> list[Finding]:
    spec = get(template, "spec")
    psc = get(spec, "securityContext")
    out = []
    for ns in ("hostNetwork", "hostPID", "hostIPC"):
        if get(spec, ns) is True:
            out.append(Finding("hostNamespaces", f"spec.{ns} is true: the pod would share the node's namespace; "
                                                 "remove it"))
    if get(psc, "windowsOptions", "hostProcess") is True:
        out.append(Finding("hostProcess", f"{POD}.windowsOptions.hostProcess is true: remove it"))
    for i, vol in enumerate(each(get(spec, "volumes"))):
        if isinstance(vol, dict) and "hostPath" in vol:
            out.append(Finding("hostPathVolumes", f"spec.volumes[{vol.get('name', i)}].hostPath: hostPath volumes "
                               "are not allowed; use emptyDir, configMap, secret, projected or a PVC"))
    annotations = get(template, "metadata", "annotations")
    for key, value in (annotations if isinstance(annotations, dict) else {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and isinstance(value, str) \
                and not is_unknown(value) and not (value == "runtime/default" or value.startswith("localhost/")):
            out.append(Finding("appArmor", f"metadata.annotations[{key}] is {value}: use runtime/default"))
    for sysctl in each(get(psc, "sysctls")):
        name = get(sysctl, "name")
        if isinstance(name, str) and name not in SAFE_SYSCTLS:
            out.append(Finding("sysctls", f"{POD}.sysctls[{name}]: sysctl {name} is not in the safe set; remove it"))
    out += _context_baseline(POD, psc)
    for where, c in containers(spec):
        sc = get(c, "securityContext")
        csc = f"{where}.securityContext"
        if get(sc, "privileged") is True:
            out.append(Finding("privileged", f"{csc}.privileged is true: set it to false"))
        if get(sc, "windowsOptions", "hostProcess") is True:
            out.append(Finding("hostProcess", f"{csc}.windowsOptions.hostProcess is true: remove it"))
        extra = {cap for cap in each(get(sc, "capabilities", "add")) if isinstance(cap, str)} - BASELINE_CAPABILITIES
        if extra:
            out.append(Finding("capabilities", f"{csc}.capabilities.add has {sorted(extra)}, beyond the baseline set: "
                                               "remove them"))
        for port in each(get(c, "ports")):
            if number(get(port, "hostPort")):
                out.append(Finding("hostPorts", f"{where}.ports: hostPort {int(get(port, 'hostPort'))} is not "
                                                "allowed; expose the port through a Service"))
        proc_mount = get(sc, "procMount")
        if isinstance(proc_mount, str) and proc_mount != "Default" and not is_unknown(proc_mount):
            out.append(Finding("procMount", f"{csc}.procMount is {proc_mount}: use Default"))
        out += _context_baseline(csc, sc)
    return out


def _context_baseline(where: str, sc: Any) -> list[Finding]:
    out = []
    se = get(sc, "seLinuxOptions")
    if isinstance(se, dict):
        se_type = get(se, "type") or ""
        if (se_type is not UNKNOWN and se_type not in SELINUX_TYPES) or _set(get(se, "user")) or _set(get(se, "role")):
            out.append(Finding("seLinux", f"{where}.seLinuxOptions {se} is not allowed: set only type container_t "
                                          "(or leave it unset)"))
    if get(sc, "seccompProfile", "type") == "Unconfined":
        out.append(Finding("seccomp", f"{where}.seccompProfile.type is Unconfined: use RuntimeDefault"))
    apparmor = get(sc, "appArmorProfile", "type")
    if apparmor is not None and apparmor is not UNKNOWN and apparmor not in APPARMOR_OK:
        out.append(Finding("appArmor", f"{where}.appArmorProfile.type is {apparmor}: use RuntimeDefault"))
    return out


def _set(value: Any) -> bool:
    return bool(value) and value is not UNKNOWN


def restricted_findings(template: dict[str, Any]) -> list[Finding]:
    spec = get(template, "spec")
    psc = get(spec, "securityContext")
    out = baseline_findings(template)
    for i, vol in enumerate(each(get(spec, "volumes"))):
        # hostPath is the baseline's finding already.
        kinds = set(vol) - {"name", "hostPath"} - RESTRICTED_VOLUMES if isinstance(vol, dict) else set()
        if kinds:
            out.append(Finding("volumeTypes", f"spec.volumes[{vol.get('name', i)}] of type {sorted(kinds)} is not "
                               f"allowed: use one of {sorted(RESTRICTED_VOLUMES)}"))
    if number(get(psc, "runAsUser")) == 0:
        out.append(Finding("runAsUser", f"{POD}.runAsUser is 0: run as a non-zero uid"))
    pod_nonroot = get(psc, "runAsNonRoot")
    if pod_nonroot is False:
        out.append(Finding("runAsNonRoot", f"{POD}.runAsNonRoot is false: pods may run as root; set it to true"))
    pod_seccomp = get(psc, "seccompProfile", "type")
    if pod_seccomp is not None and pod_seccomp is not UNKNOWN and pod_seccomp not in SECCOMP_OK:
        out.append(Finding("seccomp", f"{POD}.seccompProfile.type is {pod_seccomp}: use RuntimeDefault or Localhost"))
    for where, c in containers(spec):
        sc = get(c, "securityContext")
        csc = f"{where}.securityContext"
        escalation = get(sc, "allowPrivilegeEscalation")
        if escalation is not False and escalation is not UNKNOWN:
            out.append(Finding("privilegeEscalation", f"{csc}.allowPrivilegeEscalation is not false: set "
                                                      "allowPrivilegeEscalation: false"))
        nonroot = get(sc, "runAsNonRoot")
        if nonroot is False:
            out.append(Finding("runAsNonRoot", f"{csc}.runAsNonRoot is false: the container may run as root; "
                                               "set runAsNonRoot: true"))
        elif nonroot is None and pod_nonroot is not True and pod_nonroot is not UNKNOWN:
            out.append(Finding("runAsNonRoot", f"{csc}.runAsNonRoot is unset (and not true on the pod): the container "
                                               "may run as root; set runAsNonRoot: true on the pod or the container"))
        if number(get(sc, "runAsUser")) == 0:
            out.append(Finding("runAsUser", f"{csc}.runAsUser is 0: run as a non-zero uid"))
        seccomp = get(sc, "seccompProfile", "type")
        if seccomp is None and pod_seccomp is None:
            out.append(Finding("seccomp", f"{csc}.seccompProfile is unset on the container and the pod: set "
                                          "seccompProfile.type RuntimeDefault (or Localhost)"))
        elif seccomp is not None and seccomp is not UNKNOWN and seccomp not in SECCOMP_OK:
            out.append(Finding("seccomp", f"{csc}.seccompProfile.type is {seccomp}: use RuntimeDefault or Localhost"))
        drop = get(sc, "capabilities", "drop")
        if drop is not UNKNOWN and not any(is_unknown(d) for d in _raw_list(drop)) and "ALL" not in each(drop):
            out.append(Finding("capabilities", f"{csc}.capabilities.drop does not drop ALL capabilities: set "
                                               "capabilities.drop: [ALL]"))
        added = {cap for cap in each(get(sc, "capabilities", "add")) if isinstance(cap, str)} - {"NET_BIND_SERVICE"}
        if added:
            out.append(Finding("capabilities", f"{csc}.capabilities.add has {sorted(added)}: restricted allows "
                                               "no capabilities beyond NET_BIND_SERVICE; remove them"))
    return out


def _raw_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def baseline_violations(template: dict[str, Any]) -> list[str]:
    return [f.message for f in baseline_findings(template)]


def restricted_violations(template: dict[str, Any]) -> list[str]:
    return [f.message for f in restricted_findings(template)]
