//! Freezing a browser's process group for a memory snapshot.
//!
//! Where the server may create cgroups (cgroup v2 mounted and writable, as for root), the
//! group's processes are moved into a cgroup of their own, `agentbox-<pgid>`, under the
//! server's cgroup, and frozen with `cgroup.freeze`: the kernel stops them atomically, a
//! process they fork while freezing is frozen too, and nothing they can see changes (no
//! stop signal, no parent notification). Elsewhere the group gets SIGSTOP. Either way SIGKILL
//! still ends a frozen browser. The cgroup is removed once the group is gone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::procfs;

/// How a browser was frozen, so that it is thawed the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freezer {
    Cgroup(PathBuf),
    Signal,
}

/// Freezes every process of the group: with the cgroup v2 freezer when possible, else SIGSTOP.
pub fn freeze(pgid: u32) -> Freezer {
    if let Some(dir) = freeze_cgroup(pgid) {
        return Freezer::Cgroup(dir);
    }
    let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGSTOP);
    Freezer::Signal
}

/// Lets a frozen group run again.
pub fn thaw(pgid: u32, how: &Freezer) {
    match how {
        Freezer::Cgroup(dir) => {
            if std::fs::write(dir.join("cgroup.freeze"), "0").is_err() {
                let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGCONT);
            }
        }
        Freezer::Signal => {
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGCONT);
        }
    }
}

/// Where cgroup v2 is mounted, if it is.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.starts_with("cgroup2 ") { pre.split(' ').nth(4).map(PathBuf::from) } else { None }
    })
}

/// A process's cgroup v2 path, relative to the mount.
fn cgroup_of(pid: &str) -> Option<String> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    Some(cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim().trim_start_matches('/').to_owned())
}

/// The cgroup v2 directory this server runs in, when cgroup v2 is mounted.
fn own_cgroup() -> Option<PathBuf> {
    Some(cgroup2_mount()?.join(cgroup_of("self")?))
}

/// The cgroup a group of ours is frozen in.
fn cgroup_dir(pgid: u32) -> Option<PathBuf> {
    own_cgroup().map(|d| d.join(format!("agentbox-{pgid}")))
}

fn freeze_cgroup(pgid: u32) -> Option<PathBuf> {
    let dir = cgroup_dir(pgid)?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let procs = dir.join("cgroup.procs");
    let move_in = || {
        for pid in procfs::group_pids(pgid) {
            // A process that exited meanwhile is not an error.
            let _ = std::fs::write(&procs, pid.to_string());
        }
    };
    move_in();
    if std::fs::write(dir.join("cgroup.freeze"), "1").is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    // A process forked before the freeze but after the move joins now (and freezes on entry).
    move_in();
    // Moves can be refused (a cgroup with controllers enabled may not take processes):
    // then the freezer would freeze nothing, and SIGSTOP must do the job instead.
    let rel = format!("{}/agentbox-{pgid}", cgroup_of("self").unwrap_or_default()).trim_start_matches('/').to_owned();
    let inside = procfs::group_pids(pgid).iter().all(|pid| cgroup_of(&pid.to_string()).is_none_or(|c| c == rel));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        if inside && events.lines().any(|l| l == "frozen 1") {
            return Some(dir);
        }
        if !inside || Instant::now() > deadline {
            tracing::warn!(pgid, moved = inside, "the cgroup freezer could not hold the browser; using SIGSTOP");
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Removes the group's cgroup, if it has one; call once its processes are gone.
pub fn remove_cgroup(pgid: u32) {
    if let Some(dir) = cgroup_dir(pgid) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Removes the empty `agentbox-*` cgroups a previous run left (after its browsers were killed).
pub fn sweep_cgroups() {
    let Some(own) = own_cgroup() else { return };
    let Ok(entries) = std::fs::read_dir(&own) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("agentbox-") {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// True when the process is frozen: stopped by a signal, or in a frozen cgroup.
pub fn is_frozen(pid: u32) -> bool {
    if procfs::state_of(pid) == Some('T') {
        return true;
    }
    let (Some(mount), Some(path)) = (cgroup2_mount(), cgroup_of(&pid.to_string())) else { return false };
    std::fs::read_to_string(mount.join(path).join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}
