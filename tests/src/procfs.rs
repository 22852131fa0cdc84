//! Resident memory of processes, from Linux's /proc (the benches report it).

/// `VmRSS` of `pid` in KiB; 0 if the process is gone or /proc is unavailable.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `pid` and every process below it (children of every thread, recursively).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", tree[i]));
        for task in tasks.into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    tree
}

/// Summed `VmRSS` of `pid` and its descendants, in KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    process_tree(pid).into_iter().map(rss_kib).sum()
}

/// The soft and hard core-file size limits of `pid` as /proc writes them (`"0"`,
/// `"unlimited"`, …).
pub fn core_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let mut fields = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_default()
        .split_whitespace()
        .skip(4)
        .map(str::to_string);
    (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    )
}
