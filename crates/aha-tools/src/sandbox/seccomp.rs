//! The sandbox's seccomp filter: a deny list of system calls that no program run by `run_code`
//! needs and that reach past the sandbox — typing into a terminal (`TIOCSTI`, `TIOCLINUX`),
//! reading or writing other processes (`ptrace`, `process_vm_*`), kernel interfaces (keyrings,
//! bpf, perf, userfaultfd, io_uring, modules), new namespaces and mounts (which would undo the
//! others), and unix sockets by path (a host service listening on one). Denied calls fail with
//! EPERM (`clone3` with ENOSYS, so C libraries fall back to `clone`, whose flags can be checked).

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

#[cfg(target_arch = "x86_64")]
const ARCH: Option<seccompiler::TargetArch> = Some(seccompiler::TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<seccompiler::TargetArch> = Some(seccompiler::TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<seccompiler::TargetArch> = None;

/// Push a character into a terminal's input queue.
const TIOCSTI: u64 = 0x5412;
/// Console tricks, including pasting the selection into the input queue.
const TIOCLINUX: u64 = 0x541C;

/// System calls denied outright.
fn denied() -> Vec<(&'static str, i64)> {
    vec![
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("kexec_load", libc::SYS_kexec_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("fsopen", libc::SYS_fsopen),
        ("fsmount", libc::SYS_fsmount),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
    ]
}

fn cond(arg: u8, op: SeccompCmpOp, v: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, v).map_err(|e| e.to_string())
}

fn rule(c: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(c).map_err(|e| e.to_string())
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
    arch: seccompiler::TargetArch,
) -> Result<seccompiler::BpfProgram, String> {
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .and_then(|f| f.try_into())
    .map_err(|e| e.to_string())
}

/// The filters as BPF programs: the deny list (EPERM), then `clone3` (ENOSYS).
fn programs() -> Result<[seccompiler::BpfProgram; 2], String> {
    let arch = ARCH.ok_or("no seccomp filter for this architecture")?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in denied() {
        rules.insert(nr, vec![]);
    }
    // ioctl(fd, TIOCSTI | TIOCLINUX, …): the request is an unsigned int, so its low 32 bits.
    let request = |v| {
        SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)
            .map_err(|e| e.to_string())
    };
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![request(TIOCSTI)?])?,
            rule(vec![request(TIOCLINUX)?])?,
        ],
    );
    // socket(AF_UNIX, …): no unix sockets by path or name (socketpair stays allowed).
    let family = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::AF_UNIX as u64,
    )
    .map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_socket, vec![rule(vec![family])?]);
    // clone(flags, …) making a namespace.
    let mut clone_rules = Vec::new();
    for f in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ] {
        let f = f as u64;
        clone_rules.push(rule(vec![cond(0, SeccompCmpOp::MaskedEq(f), f)?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = compile(rules, libc::EPERM, arch)?;
    // clone3 passes its flags in memory, which a filter cannot read: say it does not exist.
    let no_clone3 = compile(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        libc::ENOSYS,
        arch,
    )?;
    Ok([deny, no_clone3])
}

/// Installs the filters on this process (and so on everything it starts; no_new_privs is set
/// too). Returns what they cover, for the run's protections.
pub fn apply() -> Result<String, String> {
    for p in programs()? {
        seccompiler::apply_filter(&p).map_err(|e| e.to_string())?;
    }
    Ok(format!(
        "terminal input injection, unix sockets, new namespaces and {} kernel interfaces blocked",
        denied().len()
    ))
}
