//! The process: the build (`spoa_guard_build_info`), and the standard process metrics
//! under the names every Prometheus client library's process collector exports, so that
//! the dashboards and alerts written for any service work unchanged:
//!
//! | metric | type | from |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | `/proc/self/stat` utime + stime, in clock ticks |
//! | `process_open_fds` | gauge | entries of `/proc/self/fd` |
//! | `process_max_fds` | gauge | the soft `RLIMIT_NOFILE` (getrlimit: `/proc/self/limits` "Max open files") |
//! | `process_start_time_seconds` | gauge | `/proc/stat` btime + `/proc/self/stat` starttime |
//! | `process_resident_memory_bytes` | gauge | `/proc/self/stat` rss, in pages |
//! | `process_virtual_memory_bytes` | gauge | `/proc/self/stat` vsize |
//!
//! Read by hand at scrape time ([`ProcessStats::read`]): the prometheus-client crate has
//! no process collector (the Go, Java and Python clients do), and these few numbers do
//! not justify a procfs crate. The clock-tick rate and the page size come from the
//! kernel (`rustix::param`, the auxiliary vector: `sysconf(_SC_CLK_TCK)` and
//! `sysconf(_SC_PAGESIZE)` without libc). A value that cannot be read (not Linux, no
//! `/proc`) leaves its series out.
//!
//! The names carry no `spoa_guard_` prefix: [`ProcessCollector`] is registered at the
//! registry's root, next to the agent's prefixed collector.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::Encoded;

pub(super) fn build_info(encoder: &mut DescriptorEncoder<'_>) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "build_info",
        "Version of the running agent (always 1).",
        None,
        MetricType::Gauge,
    )?;
    let labels = [("version", env!("CARGO_PKG_VERSION"))];
    ConstGauge::new(1).encode(family.encode_family(&labels)?)
}

/// The standard `process_*` metrics of this process (see the module docs), read at
/// every scrape. Register it on a registry without a prefix.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        let stats = ProcessStats::read();
        if let Some(seconds) = stats.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(metric)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 5] = [
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                stats.open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                stats.max_fds.map(|n| n as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                stats.start_time_seconds,
            ),
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                stats.resident_memory_bytes.map(|n| n as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                stats.virtual_memory_bytes.map(|n| n as f64),
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let metric =
                    encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// Clock ticks per second when the kernel does not say (`USER_HZ`, 100 on every
/// architecture Linux runs this on; the Go client's procfs assumes it always).
const DEFAULT_TICKS: u64 = 100;

/// What the kernel says about this process at one moment; `None` where it could not
/// be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`None` also when unlimited).
    pub max_fds: Option<u64>,
    /// When the process started, Unix seconds.
    pub start_time_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub virtual_memory_bytes: Option<u64>,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/stat`, `/proc/self/fd` and the file limit now.
    pub fn read() -> ProcessStats {
        let ticks = match rustix::param::clock_ticks_per_second() {
            0 => DEFAULT_TICKS,
            ticks => ticks,
        };
        let page = u64::try_from(rustix::param::page_size()).unwrap_or(4096);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut stats = ProcessStats::parse(&stat, &boot, ticks, page);
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        stats.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        stats
    }

    /// The figures of `stat` (the text of `/proc/self/stat`) and `boot` (of
    /// `/proc/stat`, for `btime`), with `ticks` clock ticks a second and pages of `page`
    /// bytes; no file descriptor counts.
    pub fn parse(stat: &str, boot: &str, ticks: u64, page: u64) -> ProcessStats {
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so the fields
        // are counted from the last ')'; field 3 (state) is the first after it.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
        let ticks = ticks.max(1) as f64;
        let cpu_seconds = match (field(14), field(15)) {
            (Some(user), Some(system)) => Some(user.saturating_add(system) as f64 / ticks),
            _ => None,
        };
        let btime = boot
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        let start_time_seconds = match (btime, field(22)) {
            (Some(btime), Some(start)) => Some(btime as f64 + start as f64 / ticks),
            _ => None,
        };
        ProcessStats {
            cpu_seconds,
            open_fds: None,
            max_fds: None,
            start_time_seconds,
            resident_memory_bytes: field(24).map(|pages| pages.saturating_mul(page)),
            virtual_memory_bytes: field(23),
        }
    }
}

/// Resident memory of this process in bytes (Linux), as `process_resident_memory_bytes`
/// reports it.
pub fn resident_memory_bytes() -> Option<u64> {
    ProcessStats::read().resident_memory_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_fields_are_counted_from_the_end_of_the_command_name() {
        // A command name with spaces and a ')' of its own.
        let stat = "4242 (spoa (guard) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 150 0 0 20 0 9 0 123400 987654321 2048 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let stats = ProcessStats::parse(stat, boot, 100, 4096);
        assert_eq!(stats.cpu_seconds, Some(4.0));
        assert_eq!(stats.start_time_seconds, Some(1_700_001_234.0));
        assert_eq!(stats.virtual_memory_bytes, Some(987_654_321));
        assert_eq!(stats.resident_memory_bytes, Some(2048 * 4096));
        let nothing = ProcessStats::parse("", "", 0, 4096);
        assert_eq!(nothing, ProcessStats::default());
    }

    #[test]
    fn this_process_reads_as_a_live_one() {
        let stats = ProcessStats::read();
        let now = crate::util::unix_now() as f64;
        let started = stats.start_time_seconds.unwrap();
        assert!(started > 1e9 && started <= now + 1.0, "{started} vs {now}");
        assert!(stats.resident_memory_bytes.unwrap() > 1 << 20);
        assert!(stats.virtual_memory_bytes.unwrap() >= stats.resident_memory_bytes.unwrap());
        assert!(stats.open_fds.unwrap() >= 3);
        assert!(stats.max_fds.unwrap() >= stats.open_fds.unwrap());
        assert!(stats.cpu_seconds.unwrap() >= 0.0);
    }
}
