//! The rule set's prologue: phase 1's rules whose outcome cannot depend on the
//! request, because they read and write only `TX` (CRS's setup and initialisation:
//! paranoia levels, thresholds, score counters and the defaults for what a site did not
//! set). They run once when the rule set compiles; every transaction starts from the
//! variables they leave. The block taken is the first run of such rules in phase 1,
//! after a lead of rules that cannot change what they do or whether they run (no
//! `setvar`, skip, verdict, capture or rule-changing `ctl`: ModSecurity's recommended
//! body-processor rules). A transaction then runs the lead and resumes after the block,
//! and sees exactly what running every rule in order would have given.

use crate::actions::{Ctl, EngineMode};
use crate::exchange::Peer;
use crate::ruleset::{CompiledRule, Disruptive, Entry, RuleCtl, RuleSet};
use crate::store::Store;
use crate::transaction::Transaction;
use crate::variables::Collection;

/// What phase 1 runs per request, and the state it starts from.
#[derive(Debug, Default)]
pub struct Prologue {
    /// Phase 1 runs its entries before `lead`, then those from `start` on.
    pub lead: usize,
    pub start: usize,
    /// `TX` after the prologue's rules.
    pub store: Store,
    /// Their last match (`MATCHED_VAR`), which the rules after them see.
    pub last: Option<(Vec<u8>, Vec<u8>)>,
}

impl Prologue {
    /// Runs the leading request-independent rules of `rules`' phase 1. An empty
    /// prologue if there are none, or if the engine is off (no rule may run then).
    pub fn of(rules: &RuleSet) -> Prologue {
        let entries = &rules.phases[0];
        if rules.engine == Some(EngineMode::Off) {
            return Prologue::default();
        }
        let lead = entries
            .iter()
            .position(|e| matches!(e, Entry::Rule(r) if request_independent(r) || !order_free(r)))
            .unwrap_or(entries.len());
        let n = entries[lead..]
            .iter()
            .position(|e| matches!(e, Entry::Rule(r) if !request_independent(r)))
            .map_or(entries.len(), |p| lead + p);
        if n == lead {
            return Prologue::default();
        }
        let mut tx = Transaction::new(rules, Peer::default());
        let (skip_to, skip) = tx.run_entries(1, &entries[lead..n]);
        let Some((store, matched)) = tx.prologue_state() else {
            return Prologue::default();
        };
        // A skip still pending goes on past the prologue, whatever the request: to its
        // marker, then over the rules a `skip` still counts.
        let mut start = match skip_to {
            Some(marker) => entries[n..]
                .iter()
                .position(|e| matches!(e, Entry::Marker(m) if m == marker))
                .map_or(entries.len(), |p| n + p + 1),
            None => n,
        };
        let mut left = skip;
        while left > 0 && start < entries.len() {
            if matches!(entries[start], Entry::Rule(_)) {
                left -= 1;
            }
            start += 1;
        }
        Prologue {
            lead,
            start,
            store,
            last: matched.last,
        }
    }
}

/// True if the rule (and its chain) reads only `TX` and writes only `TX`: its effect
/// is the same for every request. (A rule that would log or decide is allowed if, run
/// at load, it does not match: it never will. `of` checks that nothing was logged.)
fn request_independent(r: &CompiledRule) -> bool {
    let tx_only = |t: &crate::macros::Template| t.collections().all(|c| c == "tx" || c == "rule");
    r.targets.iter().all(|t| t.collection == Collection::Tx)
        && r.operator.template().is_none_or(tx_only)
        && r.setvars.iter().all(|s| {
            s.collection.eq_ignore_ascii_case("tx") && tx_only(&s.name) && tx_only(&s.value)
        })
        && r.ctls.is_empty()
        && r.chained.as_deref().is_none_or(request_independent)
}

/// True if the rule (and its chain) cannot change what later `TX`-only rules do or
/// whether they run (no `setvar`, capture, skip or verdict, and no `ctl` but those
/// about bodies), nor see what they did (it reads no `TX` and no earlier match).
fn order_free(r: &CompiledRule) -> bool {
    let stateless = |t: &crate::macros::Template| {
        t.collections()
            .all(|c| c != "tx" && !c.starts_with("matched_var"))
    };
    r.targets.iter().all(|t| !reads_state(t.collection))
        && r.operator.template().is_none_or(stateless)
        && r.msg.as_ref().is_none_or(stateless)
        && r.logdata.as_ref().is_none_or(stateless)
        && r.setvars.is_empty()
        && !r.capture
        && r.skip.is_none()
        && r.skip_after.is_none()
        && matches!(r.disruptive, None | Some(Disruptive::Pass))
        && r.ctls.iter().all(|c| {
            matches!(
                c,
                RuleCtl::Plain(
                    Ctl::RequestBodyProcessor(_)
                        | Ctl::RequestBodyAccess(_)
                        | Ctl::ResponseBodyAccess(_)
                        | Ctl::ForceRequestBodyVariable(_)
                )
            )
        })
        && r.chained.as_deref().is_none_or(order_free)
}

/// Decides at load the `TX`-only tests whose only effect is a `skipAfter` (CRS's
/// paranoia-level gates, `SecRule TX:DETECTION_PARANOIA_LEVEL "@lt 2" ...`) when no
/// rule that runs per request writes the keys they read: those keys then hold what the
/// prologue left, in every phase. Such a rule becomes an unconditional skip, or nothing.
pub(crate) fn fold(set: &mut RuleSet) {
    let Some(written) = written_per_request(set) else {
        return;
    };
    // A gate that matches sets `MATCHED_VAR`; a decided one does not. That is only
    // seen by a rule that reads an earlier rule's match before matching itself.
    if set.rules().any(reads_earlier_match) {
        return;
    }
    let mut decided = Vec::new();
    for (phase, i, e, r) in per_request_rules(set) {
        if !foldable(r, &written) {
            continue;
        }
        let mut tx = Transaction::after_prologue(set);
        let (skip_to, _) = tx.run_entries(phase as u8 + 1, std::slice::from_ref(e));
        if tx.prologue_state().is_some() {
            decided.push((phase, i, skip_to.is_some()));
        }
    }
    for (phase, i, fixed) in decided {
        if let Entry::Rule(r) = &mut set.phases[phase][i] {
            r.fixed = Some(fixed);
        }
    }
}

/// The `TX` keys that rules run per request may write: names, and prefixes of names
/// built at run time (`tx.header_name_920450_%{tx.0}`).
#[derive(Default)]
struct Written {
    keys: std::collections::HashSet<String>,
    prefixes: Vec<String>,
}

impl Written {
    fn may_write(&self, key: &[u8]) -> bool {
        let key = String::from_utf8_lossy(key).to_ascii_lowercase();
        self.keys.contains(&key) || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// What rules run per request may write to `TX`; None if one writes a key that could
/// be anything.
fn written_per_request(set: &RuleSet) -> Option<Written> {
    let mut w = Written::default();
    for (_, _, _, first) in per_request_rules(set) {
        let mut link = Some(first);
        while let Some(r) = link {
            let tx = r
                .setvars
                .iter()
                .filter(|s| s.collection.eq_ignore_ascii_case("tx"));
            for sv in tx {
                if sv.name.is_literal() {
                    let name = sv.name.expand(&crate::macros::NoVars);
                    w.keys
                        .insert(String::from_utf8_lossy(&name).to_ascii_lowercase());
                } else if sv.name.literal_prefix().is_empty() {
                    return None;
                } else {
                    w.prefixes
                        .push(sv.name.literal_prefix().to_ascii_lowercase());
                }
            }
            if r.capture {
                w.keys.extend((0..10).map(|d| d.to_string()));
            }
            link = r.chained.as_deref();
        }
    }
    Some(w)
}

/// The rules a transaction runs (all but the prologue's block): phase index, entry
/// index, the entry, its rule.
fn per_request_rules(set: &RuleSet) -> impl Iterator<Item = (usize, usize, &Entry, &CompiledRule)> {
    let block = set.prologue.lead..set.prologue.start;
    set.phases
        .iter()
        .enumerate()
        .flat_map(move |(phase, entries)| {
            let block = block.clone();
            entries
                .iter()
                .enumerate()
                .filter_map(move |(i, e)| match e {
                    Entry::Rule(r) if !(phase == 0 && block.contains(&i)) => {
                        Some((phase, i, e, &**r))
                    }
                    _ => None,
                })
        })
}

/// The collections of earlier matches (`MATCHED_VAR` and kin).
fn is_match(c: Collection) -> bool {
    matches!(
        c,
        Collection::MatchedVar
            | Collection::MatchedVars
            | Collection::MatchedVarName
            | Collection::MatchedVarsNames
    )
}

/// Collections that hold what rules did, rather than what the request holds.
fn reads_state(c: Collection) -> bool {
    c == Collection::Tx || is_match(c)
}

/// True if a rule's first link tests, or its operator expands, an earlier match.
fn reads_earlier_match(r: &CompiledRule) -> bool {
    r.targets.iter().any(|t| is_match(t.collection))
        || r.operator
            .template()
            .is_some_and(|t| t.collections().any(|c| c.starts_with("matched_var")))
}

/// A rule that tests named `TX` keys no per-request rule writes, and whose only effect
/// when it matches is its `skipAfter`.
fn foldable(r: &CompiledRule, written: &Written) -> bool {
    let unwritten = |k: &[u8]| !written.may_write(k);
    r.skip_after.is_some()
        && r.skip.is_none()
        && r.chained.is_none()
        && r.setvars.is_empty()
        && r.ctls.is_empty()
        && !r.capture
        && !r.log
        && matches!(r.disruptive, None | Some(Disruptive::Pass))
        && !r.targets.is_empty()
        && r.targets.iter().all(|t| {
            t.collection == Collection::Tx
                && !t.exclude
                && matches!(&t.select, crate::target::Select::Key(k) if unwritten(k))
        })
        && r.operator.template().is_none_or(|t| {
            t.keys_of("tx")
                .all(|k| k.is_some_and(|k| unwritten(k.as_bytes())))
                && t.collections().all(|c| c == "tx")
        })
}

#[cfg(test)]
mod tests {
    use crate::ruleset::compile;
    use crate::{load_str, Transaction};
    use std::path::Path;

    fn rules(text: &str) -> crate::RuleSet {
        compile(load_str(text, Path::new("t.conf"), Path::new(".")).expect("loads"))
            .expect("compiles")
    }

    #[test]
    fn runs_tx_only_rules_once_and_stops_at_the_first_request_rule() {
        let set = rules(concat!(
            "SecRuleEngine On\n",
            "SecRule REQUEST_HEADERS:Content-Type \"@contains json\" \"id:10,phase:1,pass,nolog,ctl:requestBodyProcessor=JSON\"\n",
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.pl=2,setvar:tx.score=0\"\n",
            "SecRule &TX:threshold \"@eq 0\" \"id:2,phase:1,pass,nolog,setvar:tx.threshold=5\"\n",
            "SecRule TX:pl \"@lt 2\" \"id:3,phase:1,pass,nolog,skipAfter:END\"\n",
            "SecRule REQUEST_URI \"@contains /x\" \"id:4,phase:1,pass,nolog,setvar:tx.score=+%{tx.threshold}\"\n",
            "SecMarker END\n",
            "SecRule TX:score \"@ge 5\" \"id:5,phase:1,deny,log\"\n",
        ));
        assert_eq!((set.prologue.lead, set.prologue.start), (1, 4));
        assert_eq!(set.prologue.store.get("tx", "threshold"), Some(&b"5"[..]));
        let judge = |uri: &str| {
            let mut tx = Transaction::new(&set, Default::default());
            tx.x.set_request_line(b"GET", uri.as_bytes(), b"HTTP/1.1");
            tx.process_request_headers().is_some()
        };
        assert!(judge("/x"));
        assert!(!judge("/y"));
    }

    #[test]
    fn a_pending_skip_carries_past_the_prologue() {
        let set = rules(concat!(
            "SecRuleEngine On\n",
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.pl=1\"\n",
            "SecRule TX:pl \"@lt 2\" \"id:2,phase:1,pass,nolog,skipAfter:END\"\n",
            "SecRule REQUEST_URI \"@contains /x\" \"id:3,phase:1,deny,log\"\n",
            "SecMarker END\n",
            "SecRule REQUEST_URI \"@contains /y\" \"id:4,phase:1,deny,log\"\n",
        ));
        let judge = |uri: &str| {
            let mut tx = Transaction::new(&set, Default::default());
            tx.x.set_request_line(b"GET", uri.as_bytes(), b"HTTP/1.1");
            tx.process_request_headers().map(|i| i.rule_id)
        };
        assert_eq!(judge("/x"), None);
        assert_eq!(judge("/y"), Some(Some(4)));
    }

    #[test]
    fn a_lead_that_sets_variables_means_no_prologue() {
        let set = rules(concat!(
            "SecRuleEngine On\n",
            "SecRule REQUEST_URI \"@contains /x\" \"id:1,phase:1,pass,nolog,setvar:tx.a=2\"\n",
            "SecRule &TX:a \"@eq 0\" \"id:2,phase:1,pass,nolog,setvar:tx.a=1\"\n",
        ));
        assert_eq!((set.prologue.lead, set.prologue.start), (0, 0));
    }

    #[test]
    fn a_lead_that_reads_tx_sees_it_empty() {
        let set = rules(concat!(
            "SecRuleEngine On\n",
            "SecRequestBodyAccess On\n",
            "SecRule REQUEST_HEADERS:X-Token \"@streq %{tx.tok}\" \"id:10,phase:1,pass,nolog,ctl:requestBodyAccess=Off\"\n",
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.tok=abc\"\n",
        ));
        assert_eq!((set.prologue.lead, set.prologue.start), (0, 0));
        let mut tx = Transaction::new(&set, Default::default());
        tx.x.set_request_line(b"GET", b"/", b"HTTP/1.1");
        tx.x.add_header(b"X-Token", b"abc");
        tx.process_request_headers();
        assert!(tx.request_body_access());
    }

    #[test]
    fn without_phase_1_there_is_no_prologue_state() {
        let set = rules(concat!(
            "SecRuleEngine On\n",
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.t=5\"\n",
            "SecRule TX:t \"@lt 9\" \"id:2,phase:5,pass,nolog,skipAfter:END\"\n",
            "SecRule &TX:t \"@eq 0\" \"id:9,phase:5,pass,log,msg:'no setup'\"\n",
            "SecMarker END\n",
        ));
        assert_eq!(set.prologue.store.get("tx", "t"), Some(&b"5"[..]));
        // A request refused before its headers were judged: phase 5 alone.
        let mut tx = Transaction::new(&set, Default::default());
        tx.process_logging();
        assert_eq!(
            tx.matched().iter().map(|m| m.rule.id).collect::<Vec<_>>(),
            [Some(9)]
        );
        // A judged one: the gate skips rule 9.
        let mut tx = Transaction::new(&set, Default::default());
        tx.x.set_request_line(b"GET", b"/", b"HTTP/1.1");
        tx.process_request_headers();
        tx.process_logging();
        assert!(tx.matched().is_empty());
    }

    #[test]
    fn gates_stay_rules_when_a_rule_reads_an_earlier_match() {
        let set = rules(concat!(
            "SecRuleEngine On\n",
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.pl=1\"\n",
            "SecRule TX:pl \"@lt 2\" \"id:2,phase:2,pass,nolog,skipAfter:E\"\n",
            "SecMarker E\n",
            "SecRule MATCHED_VAR \"@streq 1\" \"id:3,phase:2,deny,log\"\n",
        ));
        assert!(set.rules().all(|r| r.fixed.is_none()));
        let mut tx = Transaction::new(&set, Default::default());
        tx.x.set_request_line(b"GET", b"/", b"HTTP/1.1");
        tx.process_request_headers();
        let verdict = tx.process_request_body().map(|i| i.rule_id);
        assert_eq!(verdict, Some(Some(3)));
    }

    #[test]
    fn logging_or_off_means_no_prologue() {
        let logs = rules("SecRuleEngine On\nSecAction \"id:1,phase:1,pass,log,setvar:tx.a=1\"\n");
        assert_eq!(logs.prologue.start, 0);
        let quiet = rules(concat!(
            "SecRuleEngine On\n",
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.a=1\"\n",
            "SecRule &TX:a \"@eq 0\" \"id:2,phase:1,deny,log\"\n",
        ));
        assert_eq!(quiet.prologue.start, 2);
        let off = rules("SecRuleEngine Off\nSecAction \"id:1,phase:1,pass,nolog,setvar:tx.a=1\"\n");
        assert_eq!(off.prologue.start, 0);
    }
}
