//! Finding Chromium processes by their profile directory in `/proc`, for reaping what a
//! dead server left and for measuring memory (PSS) of a process group.

use std::path::Path;

use crate::launch::kill_group;

/// A process seen in `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub pgid: u32,
}

/// A process's state letter from `/proc/<pid>/stat` (`R`, `S`, `T` for stopped, `Z`, …).
pub fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: read after its end.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Every live process whose command line has `--user-data-dir=` under `profiles_root`.
/// Chromium's child processes rewrite their command line into one space-separated string,
/// so this looks for the flag anywhere in the raw bytes rather than argument by argument.
pub fn processes_under(profiles_root: &Path) -> Vec<ProcInfo> {
    let needle = format!("--user-data-dir={}/", profiles_root.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| raw.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .filter_map(|pid| Some(ProcInfo { pid, pgid: pgid_of(pid)? }))
        .collect()
}

/// Kills every process group that has a process under `profiles_root` (what a previous
/// run left when it died) and waits, up to 5 s, until they are gone, so that their profile
/// dirs can be removed without racing a dying writer. Returns how many were found.
pub fn reap_orphans(profiles_root: &Path) -> usize {
    let own = nix::unistd::getpgrp().as_raw() as u32;
    let found = processes_under(profiles_root);
    for p in &found {
        if p.pgid != own {
            kill_group(p.pgid);
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // Wait for whole groups: a child the scan missed (it may be mid-exec, or frozen while
    // its command line was rewritten) still dies with its group, and must be gone too.
    let alive = || found.iter().any(|p| is_running(p.pid) || (p.pgid != own && group_running(p.pgid)));
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    crate::freeze::sweep_cgroups();
    found.len()
}

/// True while `pid` exists and is not a zombie (a killed process whose parent has not
/// reaped it yet holds no memory and no files).
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// True while any process of the group runs (zombies do not count).
pub fn group_running(pgid: u32) -> bool {
    !group_pids(pgid).is_empty()
}

/// Waits, up to `limit`, until no process of the group runs. Blocking: call it from a
/// blocking context.
pub fn wait_group_gone(pgid: u32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if !group_running(pgid) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Sum of the proportional set size (PSS) of every process in a group, in KiB.
pub fn group_pss_kib(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pgid_of(*pid) == Some(pgid))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// The process group of a pid, from field 5 of `/proc/<pid>/stat`.
/// CPU time (user + system, in clock ticks, usually 1/100 s) used so far by every process
/// of a group.
pub fn group_cpu_ticks(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| pgid_of(*pid) == Some(pgid))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            // After the name: state is field 3, utime 14 and stime 15 (1-based).
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Every live process of a process group.
pub fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pgid_of(*pid) == Some(pgid) && is_running(*pid))
        .collect()
}

pub fn pgid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    let _ppid = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_group_of_this_process_is_read_from_proc() {
        let own = std::process::id();
        assert_eq!(pgid_of(own), Some(nix::unistd::getpgrp().as_raw() as u32));
    }

    #[test]
    fn no_process_runs_under_a_directory_nobody_uses() {
        let dir = tempfile::tempdir().unwrap();
        assert!(processes_under(dir.path()).is_empty());
    }
}
