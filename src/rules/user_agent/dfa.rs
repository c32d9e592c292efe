//! `DfaScan`: literals (of every rule with the same case setting) compiled into one
//! Aho-Corasick DFA, searched by walking four parts of the user agent through it in lock
//! step. The type's documentation explains the walk; this module's, why it was chosen.
//!
//! # Why this matcher: measurements
//!
//! `benches/user_agent.rs`, group `choice`: the 699 lines of `bad-user-agents.list`
//! matched against the 200 most common real browser user agents of `browsers.jsonl`
//! (134 bytes on average; none of them matches) and the 78 (case-sensitive) or 82
//! (`ignore_case`) bot user agents of the fixtures that do match. Every candidate
//! compiles its regexes like the `patterns` module (`regex::bytes`, Unicode off). Median
//! time per user agent from `target/criterion/choice*/*/new/estimates.json`; 2 vCPU AMD
//! EPYC VM shared with other builds (load average ≈ 2.5, so expect ±30 % between runs),
//! rustc 1.95, bench profile:
//!
//! | candidate | browser | browser, `ignore_case` | bot | bot, `ignore_case` | build (cs / ci) |
//! |---|---|---|---|---|---|
//! | (a) `RegexSet::is_match` | 449 ns | 604 ns | 231 ns | 299 ns | 2.6 / 129 ms |
//! | (b) one alternation `(?:p1)\|(?:p2)\|…`, `is_match` | 280 ns | 282 ns | 142 ns | 123 ns | 2.0 / 4.5 ms |
//! | (b) with `dfa_size_limit(16 MiB)` | 253 ns | 269 ns | 132 ns | 123 ns | 1.8 / 5.0 ms |
//! | (c) `AhoCorasick` (DFA) on the 690 literals + alternation of the other 9 | 438 ns | 910 ns | 122 ns | 125 ns | 4.6 / 4.7 ms |
//! | (d) `DfaScan`: interleaved DFA walk, 9 anchored wildcard lines | **114 ns** | **119 ns** | **81 ns** | **87 ns** | 6.4 / 10.3 ms |
//!
//! Group `choice_full` repeats (b) and (d) with `ignore_case` over all 5,854 distinct
//! browser user agents and the 506 crawler examples of `crawler-user-agents.json` that
//! the list matches, enough variety to fill a lazy DFA's cache:
//!
//! | candidate | browser | bot |
//! |---|---|---|
//! | (b), default 2 MiB cache | 306 ns | **27.8 µs** |
//! | (b) with `dfa_size_limit(16 MiB)` | 296 ns | 152 ns |
//! | (d) `DfaScan` | 177 ns | 118 ns |
//!
//! Memory, counted with a counting allocator in a scratch program after matching 7,970
//! user agents: (d) keeps 2.6 MiB (the DFA: about 5,000 states of 128 byte classes × 4
//! bytes; 3.5 MiB at the peak of loading) and nothing per thread; (b) keeps 0.55 MiB,
//! plus a lazy-DFA cache of 2.2–2.9 MiB in every thread that uses it (11.6 MiB after five
//! threads; 14.6 MiB with the 16 MiB limit).
//!
//! A second run ranked the candidates the same way, with (d) at 122–151 ns for browsers
//! and (b) at 253–285 ns. What the numbers say:
//!
//! - Without a usable prefilter every candidate is a DFA walk, one table lookup per byte,
//!   each depending on the previous one: about 1.6 ns per byte here, whatever the number
//!   of patterns. 699 distinct literals defeat the prefilters of both `regex` and
//!   `aho-corasick` (Teddy handles up to 64; beyond a few dozen it is dropped), and
//!   case-insensitive literals defeat them even for 9 (c).
//! - `RegexSet` pays for tracking which patterns matched although we only ask whether
//!   one did; with `ignore_case` its build takes 130 ms.
//! - With `ignore_case` and real traffic, the 699 case-folded alternatives overflow the
//!   lazy DFA's default 2 MiB cache: `regex` clears it again and again and falls back to
//!   its NFA simulation, 28 µs per bot. A larger `dfa_size_limit` cures that (every
//!   regex here is built with [`DFA_CACHE_BYTES`](super::DFA_CACHE_BYTES)) but cannot
//!   make the walk faster.
//! - Walking four parts of the user agent through the same DFA *at once* keeps four
//!   independent lookups in flight, so the walk runs at the CPU's load throughput rather
//!   than its latency: 2.6× faster than one walk over the same DFA (88 ns against 232 ns,
//!   best-of-200 in a prototype), and the Aho-Corasick DFA is built in full at load time,
//!   so there is no cache to thrash and nothing per thread. Stopping each part at the
//!   right point needs the trie depth of each DFA state; see [`DfaScan`].
//!
//! Tried in a prototype and dropped: hashing 4-byte windows into a bitmap filter with
//! exact verification (≈ 160 ns), a bigram pre-filter in front of it (≈ 190 ns),
//! aho-corasick's SIMD Teddy over a 175-trigram cover of the list in three searchers
//! (≈ 600 ns: far too many false candidates), many small prefiltered searchers of 16–127
//! literals each (1.5–7 µs), and eight interleaved streams (no faster than four).

use std::fmt;
use std::ops::ControlFlow;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::{dfa::DFA, Anchored, MatchKind, StartKind};
use regex_automata::meta::Regex;

use super::patterns::CompileError;

/// User agents shorter than this many bytes per stream are scanned as one stream: the
/// interleaved walk has a fixed set-up cost that short strings (`curl/8.5.0`) do not repay.
const MIN_STREAM_BYTES: usize = 16;

/// A set of literals compiled into one Aho-Corasick DFA and searched by walking four
/// parts of the haystack through it in lock step.
///
/// # Why four streams
///
/// A DFA walk is a chain of dependent table loads: the next state's address is known
/// only once the current load completes, so one walk costs a load latency per byte. Four
/// walks over four different parts of the haystack are independent, so the CPU overlaps
/// their loads: 91 ns instead of 230 ns for a 134-byte user agent against the 690
/// literals of the bad-bot list (eight streams are no faster).
///
/// # Where a stream stops
///
/// Stream `k` starts in the start state at the beginning of part `k` and so finds every
/// occurrence that *starts* in part `k`, provided it keeps walking until that occurrence
/// ends. An occurrence can run into the next part, so after reaching the end of its part
/// at offset `e` the stream continues while its state's trie depth `d` (the length of
/// the longest suffix of what it has read that is a prefix of some literal) exceeds the
/// bytes `j` it has read past `e`. Once `d <= j`, every partial match still alive started
/// at or after `e`, where stream `k + 1` finds it. On a browser user agent this costs a
/// few bytes per stream. The depth of a state is its distance from the start state in
/// the DFA, computed once by a breadth-first walk.
///
/// # Matches
///
/// The DFA is built with standard (overlapping) semantics, so a state is a match state
/// exactly when some literal ends at the current byte. When every literal is an exact
/// pattern, the first match state answers `true`. Otherwise some literals are anchors of
/// wildcard lines, and a hit rescans in one stream, running each anchor's confirming
/// regex at most once, so the slow path stays linear.
pub(super) struct DfaScan {
    /// Standard-semantics, unanchored Aho-Corasick DFA over all literals.
    pub(super) dfa: DFA,
    /// The unanchored start state.
    start: StateID,
    /// Trie depth of each state, indexed by `state id >> shift`. `u32::MAX` (never
    /// stops a stream) for a state the breadth-first walk did not reach.
    depth: Box<[u32]>,
    /// State ids are multiples of `1 << shift` (the DFA premultiplies them by its stride).
    shift: u32,
    /// Per literal (by aho-corasick pattern id): `None` for an exact pattern, or the index
    /// in `confirms` of the wildcard regex it anchors.
    confirm: Box<[Option<usize>]>,
    /// The regexes of wildcard lines.
    pub(super) confirms: Box<[Regex]>,
    /// No anchors: a match state means a match.
    exact: bool,
}

impl DfaScan {
    /// Compiles `literals`; `confirm` has one entry per literal (see the field).
    pub(super) fn new(
        literals: &[Vec<u8>],
        confirm: Vec<Option<usize>>,
        confirms: Vec<Regex>,
        ignore_case: bool,
    ) -> Result<DfaScan, CompileError> {
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .ascii_case_insensitive(ignore_case)
            .prefilter(false)
            .build(literals)?;
        let start = dfa.start_state(Anchored::No)?;

        // Breadth-first from the start state. Only bytes that occur in some literal (in
        // either case with ignore_case) can lead anywhere but the start state.
        let mut alphabet = [false; 256];
        for &b in literals.iter().flatten() {
            for b in [b, b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                if let Some(slot) = alphabet.get_mut(usize::from(b)) {
                    *slot = true;
                }
            }
        }
        let alphabet: Vec<u8> = (0..=255u8)
            .filter(|&b| alphabet.get(usize::from(b)) == Some(&true))
            .collect();
        // Visited states are marked in a table indexed by the raw state id (ids are
        // premultiplied, so this is as large as the DFA's transition table, briefly):
        // hashing 350,000 transitions of the bad-bot list cost 15 ms.
        let mut seen: Vec<bool> = Vec::new();
        let mut visit = |sid: StateID| {
            let at = sid.as_usize();
            if seen.len() <= at {
                seen.resize(
                    at.saturating_add(1).max(seen.len().saturating_mul(2)),
                    false,
                );
            }
            match seen.get_mut(at) {
                Some(slot) if !*slot => {
                    *slot = true;
                    true
                }
                _ => false,
            }
        };
        visit(start);
        let mut found: Vec<(StateID, u32)> = vec![(start, 0)];
        let mut next = 0;
        while let Some(&(sid, depth)) = found.get(next) {
            next += 1;
            for &b in &alphabet {
                let to = dfa.next_state(Anchored::No, sid, b);
                if visit(to) {
                    found.push((to, depth.saturating_add(1)));
                }
            }
        }
        let shift = found
            .iter()
            .map(|(sid, _)| sid.as_usize())
            .filter(|&sid| sid != 0)
            .map(usize::trailing_zeros)
            .min()
            .unwrap_or(0);
        let max = found
            .iter()
            .map(|(sid, _)| sid.as_usize() >> shift)
            .max()
            .unwrap_or(0);
        let mut depth = vec![u32::MAX; max.saturating_add(1)];
        for (sid, d) in found {
            if let Some(slot) = depth.get_mut(sid.as_usize() >> shift) {
                *slot = d;
            }
        }
        let exact = confirm.iter().all(Option::is_none);
        Ok(DfaScan {
            dfa,
            start,
            depth: depth.into_boxed_slice(),
            shift,
            confirm: confirm.into_boxed_slice(),
            confirms: confirms.into_boxed_slice(),
            exact,
        })
    }

    /// Whether some literal occurs in `hay` (and, for an anchor, its regex confirms).
    pub(super) fn is_match(&self, hay: &[u8]) -> bool {
        match self.first_match_state(hay) {
            None => false,
            Some(sid) if self.exact || self.ends_exact(sid) => true,
            Some(_) => self.confirmed(hay),
        }
    }

    #[inline(always)]
    fn step(&self, sid: StateID, byte: u8) -> StateID {
        self.dfa.next_state(Anchored::No, sid, byte)
    }

    #[inline(always)]
    fn is_match_state(&self, sid: StateID) -> bool {
        self.dfa.is_match(sid)
    }

    /// Whether an exact literal (not only anchors) ends in match state `sid`.
    fn ends_exact(&self, sid: StateID) -> bool {
        (0..self.dfa.match_len(sid)).any(|i| {
            let pid = self.dfa.match_pattern(sid, i);
            matches!(self.confirm.get(pid.as_usize()), Some(None))
        })
    }

    /// Trie depth of `sid` (`u32::MAX` if unknown, which keeps a stream going).
    fn depth(&self, sid: StateID) -> u32 {
        self.depth
            .get(sid.as_usize() >> self.shift)
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// The first match state the walk over `hay` enters, if any: four interleaved
    /// streams, or one for short haystacks. See the type's documentation.
    fn first_match_state(&self, hay: &[u8]) -> Option<StateID> {
        let part = hay.len() / 4;
        let split = |at: usize| hay.split_at_checked(at).map(|(_, tail)| tail);
        let (Some(p1), Some(p2), Some(p3)) = (split(part), split(2 * part), split(3 * part)) else {
            return hit(self.walk(self.start, hay));
        };
        if part < MIN_STREAM_BYTES {
            return hit(self.walk(self.start, hay));
        }
        let mut s = [self.start; 4];
        for (((&b0, &b1), &b2), &b3) in hay.iter().zip(p1).zip(p2).zip(p3).take(part) {
            s[0] = self.step(s[0], b0);
            s[1] = self.step(s[1], b1);
            s[2] = self.step(s[2], b2);
            s[3] = self.step(s[3], b3);
            if self.is_match_state(s[0])
                | self.is_match_state(s[1])
                | self.is_match_state(s[2])
                | self.is_match_state(s[3])
            {
                return s.into_iter().find(|&sid| self.is_match_state(sid));
            }
        }
        // The last stream owns the remainder of the haystack.
        let rest = p3.get(part..).unwrap_or_default();
        if let ControlFlow::Break(sid) = self.walk(s[3], rest) {
            return Some(sid);
        }
        // The others run on into the next part while a partial match is alive from theirs.
        [(s[0], p1), (s[1], p2), (s[2], p3)]
            .into_iter()
            .find_map(|(sid, after)| self.run_on(sid, after))
    }

    /// Walks `bytes` from `sid`: `Break` with the first match state entered, else
    /// `Continue` with the final state.
    fn walk(&self, mut sid: StateID, bytes: &[u8]) -> ControlFlow<StateID, StateID> {
        for &b in bytes {
            sid = self.step(sid, b);
            if self.is_match_state(sid) {
                return ControlFlow::Break(sid);
            }
        }
        ControlFlow::Continue(sid)
    }

    /// Continues a stream past the end of its part into `after`, while the partial match
    /// it holds started inside its part; the match state it enters, if any.
    fn run_on(&self, mut sid: StateID, after: &[u8]) -> Option<StateID> {
        let mut past: u32 = 0;
        for &b in after {
            if self.depth(sid) <= past {
                return None;
            }
            sid = self.step(sid, b);
            if self.is_match_state(sid) {
                return Some(sid);
            }
            past = past.saturating_add(1);
        }
        None
    }

    /// The slow path when anchors exist: whether an exact literal occurs or an anchor's
    /// regex confirms.
    fn confirmed(&self, hay: &[u8]) -> bool {
        let mut found = false;
        self.each_match(hay, |_| {
            found = true;
            ControlFlow::Break(())
        });
        found
    }

    /// Calls `f` with the pattern id of every literal that occurs in `hay` and every
    /// anchor whose regex confirms (in the order they end; a literal that occurs twice is
    /// reported twice), until `f` breaks. One stream over `hay`; each confirming regex
    /// runs at most once, so this stays linear in `hay`.
    pub(super) fn each_match(&self, hay: &[u8], mut f: impl FnMut(usize) -> ControlFlow<()>) {
        let mut tried = vec![false; self.confirms.len()];
        let mut sid = self.start;
        for &b in hay {
            sid = self.step(sid, b);
            if !self.is_match_state(sid) {
                continue;
            }
            for i in 0..self.dfa.match_len(sid) {
                let pid = self.dfa.match_pattern(sid, i).as_usize();
                let matched = match self.confirm.get(pid) {
                    Some(None) => true,
                    Some(&Some(c)) => match (tried.get_mut(c), self.confirms.get(c)) {
                        (Some(done), Some(regex)) if !*done => {
                            *done = true;
                            regex.is_match(hay)
                        }
                        _ => false,
                    },
                    None => false,
                };
                if matched && f(pid).is_break() {
                    return;
                }
            }
        }
    }
}

/// The match state a [`DfaScan::walk`] stopped at, if it stopped at one.
fn hit(flow: ControlFlow<StateID, StateID>) -> Option<StateID> {
    match flow {
        ControlFlow::Break(sid) => Some(sid),
        ControlFlow::Continue(_) => None,
    }
}

impl fmt::Debug for DfaScan {
    // The DFA's own Debug prints every transition; show its size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DfaScan")
            .field("literals", &self.dfa.patterns_len())
            .field("anchored_regexes", &self.confirms.len())
            .field(
                "states",
                &self.depth.iter().filter(|&&d| d != u32::MAX).count(),
            )
            .field("memory_bytes", &self.dfa.memory_usage())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::user_agent::matcher::Literals;
    use crate::rules::user_agent::test_support::*;
    use proptest::prelude::*;

    /// Literals placed at every offset of a 300-byte haystack, so that some straddle the
    /// boundaries between the four interleaved streams.
    #[test]
    fn interleaved_scan_finds_literals_across_stream_boundaries() {
        let words: Vec<String> = (0..60).map(|i| format!("w{i:02}xyzzy{i:02}")).collect();
        let f = file_rule(&words.join("\n"), false, true);
        let groups = f.matcher.literal_groups();
        assert!(
            matches!(groups, [g] if matches!(g.search, Literals::Scan(_))),
            "expected one DFA scan"
        );
        for word in [&words[0], &words[59]] {
            for at in 0..=(300 - word.len()) {
                let mut hay = vec![b'.'; 300];
                hay[at..at + word.len()].copy_from_slice(word.as_bytes());
                assert!(f.matches(Some(&hay)), "{word} at {at}");
                // One byte short never matches.
                hay[at + word.len() - 1] = b'.';
                assert!(!f.matches(Some(&hay)), "{word} cut at {at}");
            }
        }
    }

    #[test]
    fn anchors_confirm_each_regex_once() {
        // Many anchor hits, none confirmed: still linear (and correct).
        let mut lines: Vec<String> = (0..40).map(|i| format!("lit{i:02}")).collect();
        lines.push("Mail.RU_Bot".into());
        let f = file_rule(&lines.join("\n"), false, false);
        let hay = "RU_Bot ".repeat(2000);
        assert!(!f.matches(Some(hay.as_bytes())));
        assert!(f.matches(Some(format!("{hay}Mail RU_Bot").as_bytes())));
        assert!(f.matches(Some(format!("{hay}lit39").as_bytes())));
    }

    fn naive_contains(hay: &[u8], needle: &[u8], ignore_case: bool) -> bool {
        hay.windows(needle.len())
            .any(|w| w == needle || (ignore_case && w.eq_ignore_ascii_case(needle)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Literal mode is exactly a substring scan, for the small searcher (few
        /// case-sensitive literals) as well as the interleaved DFA.
        #[test]
        fn literal_mode_is_a_substring_scan(
            needles in prop::collection::vec(
                prop::collection::vec(prop::sample::select(b"abAB .\\".to_vec()), 1..6), 1..80),
            hays in prop::collection::vec(small_bytes(300), 1..8),
            ignore_case in any::<bool>(),
        ) {
            let needles: Vec<String> = needles
                .into_iter()
                .map(|n| String::from_utf8(n).unwrap().trim().to_owned())
                .filter(|n| !n.is_empty() && !n.starts_with('#'))
                .collect();
            prop_assume!(!needles.is_empty());
            let f = file_rule(&needles.join("\n"), ignore_case, true);
            for hay in &hays {
                let expected = !hay.is_empty()
                    && needles.iter().any(|n| naive_contains(hay, n.as_bytes(), ignore_case));
                prop_assert_eq!(f.matches(Some(hay)), expected, "{:?} in {:?}", needles, hay);
            }
        }
    }
}
