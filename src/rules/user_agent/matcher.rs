//! [`UaMatcher`]: every pattern of every `[[user_agent]]` rule compiled into one
//! structure, which finds the rules that match a user agent in one pass whatever the
//! number of rules.
//!
//! # Shape
//!
//! The patterns of all rules are pooled by what they are (the `patterns` module reads
//! them), each remembering its rule:
//!
//! - **literals** (and the anchors of wildcard lines) go into one automaton per case
//!   setting, so at most two: a [`DfaScan`] (the `dfa` module: an Aho-Corasick DFA walked
//!   four streams at a time), or aho-corasick's own searcher for a few case-sensitive
//!   literals (≤ [`SMALL_SET`], whose SIMD prefilter beats any byte-at-a-time walk) and
//!   for sets too large for a DFA (over [`DFA_MAX_BYTES`] of literals, its memory-lean
//!   NFA); wildcard lines then join the regexes;
//! - **regexes** go into one multi-pattern regex (`regex_automata`'s meta regex, the
//!   engine under `regex::RegexSet`, built from each pattern's own parse so that flags
//!   and `(?x)` comments stay inside their pattern), which reports which patterns match.
//! - **`empty = true`** rules are a list of rule indices: they match exactly when the
//!   user agent is missing or empty, which no pattern can.
//!
//! # Cost
//!
//! A user agent that matches nothing (a browser: the common case) costs one pass per
//! structure — at most three — however many rules there are: before, each rule ran its
//! own search in turn, about 13 µs of agent CPU per decision with 50 one-word inline rules
//! (issue 12). Only a user agent that some structure matches pays for finding *which*
//! rules: a single-stream walk of the literal DFA, an overlapping search of the regexes.
//! The rule indices found are returned sorted, in a [`UaMatches`] that holds up to 8
//! without allocating.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use regex_automata::meta::Regex;
use regex_automata::{Input, PatternSet};
use regex_syntax::hir::Hir;
use smallvec::SmallVec;

use super::dfa::DfaScan;
use super::patterns::{CompileError, Kind, Pattern};

/// Up to this many case-sensitive literals (and no wildcard lines), the literals use
/// aho-corasick's own searcher: its SIMD prefilter (Teddy) finds 4 to 32 literals in a
/// browser user agent in 20–50 ns, against about 85 ns for `DfaScan`, which has a
/// fixed cost per byte. Beyond about 32 literals the prefilter stops paying off (105 ns
/// at 64). Case-insensitive sets never use it: aho-corasick has no prefilter for them.
pub const SMALL_SET: usize = 32;

/// Most bytes of literals (sum of their lengths) compiled into a `DfaScan`; larger sets
/// use aho-corasick's contiguous NFA.
///
/// The DFA has about one state per literal byte (fewer where literals share prefixes), of
/// one 4-byte transition per byte class: the bad-bot list's 6.8 KiB of literals make
/// about 5,000 states of 128 classes, 2.6 MiB. At this limit that is about 12 MiB.
pub const DFA_MAX_BYTES: usize = 32 * 1024;

/// Lazy-DFA cache capacity per thread for the compiled regexes
/// (`hybrid_cache_capacity`).
///
/// The default (2 MiB) is too small for hundreds of case-insensitive patterns under
/// varied traffic: the lazy DFA keeps clearing its cache and falls back to an NFA
/// simulation, 28–33 µs instead of about 150 ns per matching user agent with the bad-bot
/// list (see the measurements in the `dfa` module); 16 MiB was enough there. The cache
/// only grows as states are needed, per thread that uses the regex, so this is an upper
/// bound, not an allocation (3.4 MiB in that measurement).
pub const DFA_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The rules (by index in configuration order) that match one user agent, sorted, each
/// once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UaMatches(SmallVec<[u32; 8]>);

impl UaMatches {
    /// The matching rules' indices, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .map(|&rule| usize::try_from(rule).unwrap_or(usize::MAX))
    }

    /// Whether no rule matched.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether rule `index` matched.
    pub fn contains(&self, index: usize) -> bool {
        u32::try_from(index).is_ok_and(|index| self.0.binary_search(&index).is_ok())
    }
}

/// Every user-agent rule's patterns, compiled together; see the module documentation.
#[derive(Clone, Default)]
pub(super) struct UaMatcher {
    /// Rules with `empty = true`, in order.
    empty: Box<[u32]>,
    /// Literal automata: at most one case-sensitive and one case-insensitive.
    literals: Vec<LiteralGroup>,
    /// Every regex pattern, with the rule of each.
    regexes: Option<RegexGroup>,
}

/// Literals of one case setting.
#[derive(Clone)]
pub(super) struct LiteralGroup {
    pub(super) search: Literals,
    /// The rule of each literal, by pattern id.
    rule_of: Box<[u32]>,
}

/// How a group's literals are searched; see [`SMALL_SET`] and [`DFA_MAX_BYTES`].
#[derive(Clone)]
pub(super) enum Literals {
    /// aho-corasick's searcher (standard semantics, for overlapping search): a
    /// prefiltered search for a few case-sensitive literals, or its NFA for very large
    /// sets.
    Searcher(AhoCorasick),
    /// The interleaved DFA walk, for everything else. Shared: the DFA can be megabytes.
    Scan(Arc<DfaScan>),
}

/// Every regex pattern in one multi-pattern regex.
#[derive(Clone)]
pub(super) struct RegexGroup {
    /// All-matches semantics, so that an overlapping search reports every pattern.
    set: Regex,
    /// The rule of each pattern, by pattern id.
    rule_of: Box<[u32]>,
}

/// The literal patterns of one case setting, before compiling.
#[derive(Default)]
struct LiteralParts {
    /// `(rule, bytes)` of exact literals.
    exact: Vec<(u32, Vec<u8>)>,
    /// `(rule, anchor, pattern)` of wildcard lines.
    wildcards: Vec<(u32, Vec<u8>, Hir)>,
}

impl UaMatcher {
    /// Compiles `patterns` and the `empty` rules into one matcher.
    ///
    /// # Errors
    ///
    /// An automaton or the regexes cannot be built (too large).
    pub(super) fn build(patterns: Vec<Pattern>, empty: Vec<u32>) -> Result<Self, CompileError> {
        let (mut sensitive, mut insensitive) = (LiteralParts::default(), LiteralParts::default());
        let mut regexes: Vec<(u32, Hir)> = Vec::new();
        for pattern in patterns {
            let parts = if pattern.ignore_case {
                &mut insensitive
            } else {
                &mut sensitive
            };
            match pattern.kind {
                Kind::Literal(bytes) => parts.exact.push((pattern.rule, bytes)),
                Kind::Wildcard { anchor, hir } => parts.wildcards.push((pattern.rule, anchor, hir)),
                Kind::Regex(hir) => regexes.push((pattern.rule, hir)),
            }
        }
        let mut literals = Vec::new();
        for (parts, ignore_case) in [(sensitive, false), (insensitive, true)] {
            if let Some(group) = LiteralGroup::build(parts, ignore_case, &mut regexes)? {
                literals.push(group);
            }
        }
        Ok(UaMatcher {
            empty: empty.into_boxed_slice(),
            literals,
            regexes: RegexGroup::build(regexes)?,
        })
    }

    /// The rules matching `ua` (`None`: a missing or empty user agent).
    pub(super) fn matching(&self, ua: Option<&[u8]>) -> UaMatches {
        let Some(ua) = ua.filter(|ua| !ua.is_empty()) else {
            return UaMatches(self.empty.iter().copied().collect());
        };
        let mut found = UaMatches::default();
        for group in &self.literals {
            group.collect(ua, &mut found.0);
        }
        if let Some(regexes) = &self.regexes {
            regexes.collect(ua, &mut found.0);
        }
        if found.0.len() > 1 {
            found.0.sort_unstable();
            found.0.dedup();
        }
        found
    }

    /// The literal automata, for tests that check which searcher was chosen.
    #[cfg(test)]
    pub(super) fn literal_groups(&self) -> &[LiteralGroup] {
        &self.literals
    }

    /// Number of regex patterns in the multi-pattern regex.
    #[cfg(test)]
    pub(super) fn regex_patterns(&self) -> usize {
        self.regexes.as_ref().map_or(0, |r| r.rule_of.len())
    }
}

impl LiteralGroup {
    /// Compiles `parts`; wildcard lines move to `regexes` when the literals do not use a
    /// `DfaScan`. `None` when there is nothing to search.
    fn build(
        parts: LiteralParts,
        ignore_case: bool,
        regexes: &mut Vec<(u32, Hir)>,
    ) -> Result<Option<LiteralGroup>, CompileError> {
        let LiteralParts { exact, wildcards } = parts;
        let bytes = exact
            .iter()
            .map(|(_, literal)| literal.len())
            .chain(wildcards.iter().map(|(_, anchor, _)| anchor.len()))
            .fold(0usize, usize::saturating_add);
        let small = !ignore_case && wildcards.is_empty() && exact.len() <= SMALL_SET;
        if small || bytes > DFA_MAX_BYTES {
            regexes.extend(wildcards.into_iter().map(|(rule, _, hir)| (rule, hir)));
            if exact.is_empty() {
                return Ok(None);
            }
            let searcher = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(ignore_case)
                .build(exact.iter().map(|(_, literal)| literal))?;
            let rule_of = exact.iter().map(|&(rule, _)| rule).collect();
            return Ok(Some(LiteralGroup {
                search: Literals::Searcher(searcher),
                rule_of,
            }));
        }
        if exact.is_empty() && wildcards.is_empty() {
            return Ok(None);
        }
        let mut rule_of: Vec<u32> = Vec::with_capacity(exact.len() + wildcards.len());
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(rule_of.capacity());
        let mut confirm = vec![None; exact.len()];
        for (rule, literal) in exact {
            rule_of.push(rule);
            keys.push(literal);
        }
        let mut hirs = Vec::with_capacity(wildcards.len());
        for (rule, anchor, hir) in wildcards {
            rule_of.push(rule);
            keys.push(anchor);
            confirm.push(Some(hirs.len()));
            hirs.push(hir);
        }
        let confirms = hirs
            .iter()
            .map(|hir| {
                compile(
                    std::slice::from_ref(hir),
                    regex_automata::MatchKind::LeftmostFirst,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let scan = DfaScan::new(&keys, confirm, confirms, ignore_case)?;
        Ok(Some(LiteralGroup {
            search: Literals::Scan(Arc::new(scan)),
            rule_of: rule_of.into_boxed_slice(),
        }))
    }

    /// Adds the rules of the literals found in `ua` to `found`.
    fn collect(&self, ua: &[u8], found: &mut SmallVec<[u32; 8]>) {
        let mut add = |pid: usize| {
            if let Some(&rule) = self.rule_of.get(pid) {
                found.push(rule);
            }
        };
        match &self.search {
            Literals::Scan(scan) => {
                if scan.is_match(ua) {
                    scan.each_match(ua, |pid| {
                        add(pid);
                        ControlFlow::Continue(())
                    });
                }
            }
            Literals::Searcher(searcher) => {
                if searcher.is_match(ua) {
                    // Standard semantics (set at build), so this cannot fail.
                    for m in searcher.try_find_overlapping_iter(ua).into_iter().flatten() {
                        add(m.pattern().as_usize());
                    }
                }
            }
        }
    }
}

impl RegexGroup {
    /// Compiles the regexes; `None` when there are none.
    fn build(regexes: Vec<(u32, Hir)>) -> Result<Option<RegexGroup>, CompileError> {
        if regexes.is_empty() {
            return Ok(None);
        }
        let (rule_of, hirs): (Vec<u32>, Vec<Hir>) = regexes.into_iter().unzip();
        Ok(Some(RegexGroup {
            set: compile(&hirs, regex_automata::MatchKind::All)?,
            rule_of: rule_of.into_boxed_slice(),
        }))
    }

    /// Adds the rules of the patterns matching `ua` to `found`.
    fn collect(&self, ua: &[u8], found: &mut SmallVec<[u32; 8]>) {
        if !self.set.is_match(ua) {
            return;
        }
        let mut which = PatternSet::new(self.set.pattern_len());
        self.set
            .which_overlapping_matches(&Input::new(ua), &mut which);
        found.extend(
            which
                .iter()
                .filter_map(|pid| self.rule_of.get(pid.as_usize()).copied()),
        );
    }
}

/// One regex over `hirs` with the settings every user-agent regex uses.
fn compile(hirs: &[Hir], kind: regex_automata::MatchKind) -> Result<Regex, CompileError> {
    let config = Regex::config()
        .match_kind(kind)
        .utf8_empty(false)
        .hybrid_cache_capacity(DFA_CACHE_BYTES);
    Ok(Regex::builder()
        .configure(config)
        .build_many_from_hir(hirs)?)
}

impl fmt::Debug for UaMatcher {
    // The automata can be megabytes; show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("UaMatcher");
        d.field("empty_rules", &self.empty.len());
        for group in &self.literals {
            match &group.search {
                Literals::Scan(scan) => d.field("literals", scan),
                Literals::Searcher(searcher) => d.field(
                    "literals",
                    &format_args!("Searcher({} literals)", searcher.patterns_len()),
                ),
            };
        }
        d.field(
            "regexes",
            &self.regexes.as_ref().map_or(0, |r| r.rule_of.len()),
        )
        .finish()
    }
}
