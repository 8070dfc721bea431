"""/proc/cpuinfo samples (trimmed to one processor's identifying lines) for the CPUs int8 plans differ on."""

from __future__ import annotations

_X86_BASE = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse "
    "sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl xtopology "
    "nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr "
    "pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm"
)


def _x86(model: str, flags: str) -> str:
    return (
        "processor\t: 0\n"
        "vendor_id\t: GenuineIntel\n"
        "cpu family\t: 6\n"
        f"model name\t: {model}\n"
        "fpu\t\t: yes\n"
        f"flags\t\t: {_X86_BASE} {flags}\n"
        "vmx flags\t: vnmi preemption_timer invvpid ept_x_only ept_ad flexpriority tsc_offset vtpr mtf ept vpid\n"
        "bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs\n"
        "bogomips\t: 4800.00\n\n"
    )


# Haswell: AVX2, no AVX-512, no VNNI.
HASWELL_XEON = _x86(
    "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz",
    "epb tpr_shadow flexpriority ept vpid fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid cqm xsaveopt "
    "cqm_llc cqm_occup_llc dtherm ida arat pln pts md_clear flush_l1d",
)
# Skylake-SP: AVX-512 without VNNI (the case reduce_range was made for).
SKYLAKE_XEON = _x86(
    "Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz",
    "fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm mpx avx512f avx512dq rdseed adx smap "
    "clflushopt clwb avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves ida arat pku ospke",
)
ICE_LAKE_XEON = _x86(
    "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
    "fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma "
    "clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves wbnoinvd ida arat "
    "avx512vbmi pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq "
    "rdpid md_clear flush_l1d arch_capabilities",
)
SAPPHIRE_RAPIDS_XEON = _x86(
    "Intel(R) Xeon(R) Platinum 8488C",
    "fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma "
    "clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 "
    "wbnoinvd ida arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni "
    "avx512_bitalg tme avx512_vpopcntdq rdpid cldemote movdiri movdir64b md_clear serialize tsxldtrk "
    "amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities",
)
# Alder Lake: AVX-VNNI (VEX-encoded) on AVX2, AVX-512 fused off.
ALDER_LAKE_DESKTOP = _x86(
    "12th Gen Intel(R) Core(TM) i7-12700",
    "fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb intel_pt sha_ni "
    "xsaveopt xsavec xgetbv1 xsaves split_lock_detect avx_vnni dtherm ida arat pln pts hwp hwp_notify "
    "umip pku ospke waitpkg gfni vaes vpclmulqdq rdpid movdiri movdir64b fsrm md_clear serialize arch_lbr",
)
# Westmere: SSE4.2 only.
WESTMERE_XEON = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU X5650 @ 2.67GHz\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
    "sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 popcnt aes\n\n"
)
GRAVITON3 = (
    "processor\t: 0\n"
    "BogoMIPS\t: 2100.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
    "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp "
    "svei8mm svebf16 i8mm bf16 dgh rng\n"
    "CPU implementer\t: 0x41\n"
    "CPU architecture: 8\n"
    "CPU variant\t: 0x1\n"
    "CPU part\t: 0xd40\n"
    "CPU revision\t: 1\n\n"
)

# (name, cpuinfo text, platform.machine(), expected ISA level)
SAMPLES = [
    ("haswell", HASWELL_XEON, "x86_64", "avx2"),
    ("skylake", SKYLAKE_XEON, "x86_64", "avx512"),
    ("ice-lake", ICE_LAKE_XEON, "x86_64", "avx512-vnni"),
    ("sapphire-rapids", SAPPHIRE_RAPIDS_XEON, "x86_64", "amx"),
    ("alder-lake", ALDER_LAKE_DESKTOP, "x86_64", "avx-vnni"),
    ("westmere", WESTMERE_XEON, "x86_64", "x86-64"),
    ("graviton3", GRAVITON3, "aarch64", "arm64"),
]
