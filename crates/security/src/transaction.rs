//! One HTTP exchange judged by a rule set, phase by phase as ModSecurity runs them:
//! request headers (1), request body (2), response headers (3), response body (4),
//! logging (5). Within a phase, rules run in order; `skipAfter` jumps to its marker;
//! a rule matches when its operator matches some value of its targets after its
//! transformations, and a chain matches when every link does. Non-disruptive actions
//! (`setvar`, `capture`, `ctl`) run at each match, as in ModSecurity and Coraza; the
//! disruptive action and the log entry come once, when the whole chain has matched.

use crate::actions::{Ctl, EngineMode, IdRange, SetOp};
use crate::body::{self, Processor};
use crate::directive::LimitAction;
use crate::exchange::{Exchange, Matched, Peer, Val};
use crate::macros::Vars;
use crate::matched::MatchedRule;
use crate::ruleset::{CompiledRule, Disruptive, Entry, RuleCtl, RuleSet};
use crate::store::Store;
use crate::target::Target;
use crate::transform;
use crate::variables::Collection;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

/// What the engine decided to do to the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    pub action: InterruptAction,
    pub status: u16,
    pub rule_id: Option<u32>,
    pub phase: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterruptAction {
    Deny,
    Drop,
    Redirect(String),
}

/// Transformed values by (value address, length, transformation prefix id); None:
/// the transformations left the value as it was.
type TransformCache = FxHashMap<(usize, usize, u32), Option<Arc<[u8]>>>;

/// A target removed for this transaction only (`ctl:ruleRemoveTargetBy*`).
enum Scope {
    Id(IdRange),
    Tag(String),
}

/// One exchange being judged.
pub struct Transaction<'r> {
    rules: &'r RuleSet,
    engine: EngineMode,
    pub x: Exchange,
    store: Store,
    matched_now: Matched,
    log: Vec<MatchedRule<'r>>,
    interruption: Option<Interruption>,
    /// `allow` ended rule processing for the request phases (1, 2) or all (1–4).
    allowed_through: u8,
    removed_ids: Vec<IdRange>,
    removed_tags: Vec<String>,
    removed_targets: Vec<(Scope, Target)>,
    processor: Option<Processor>,
    force_body_variable: bool,
    request_body_access: bool,
    response_body_access: bool,
    /// Phase 1 has started from the prologue's variables.
    prologue_applied: bool,
    /// The rule being run, for `%{rule.*}`.
    current: Option<&'r CompiledRule>,
    /// Transformed values by (value address, length, transformation prefix id), for
    /// the phase being run: rules that share transformations transform a value once.
    cache: RefCell<TransformCache>,
    /// Prefilter scans by (value address, length, chain key): the rules that may match.
    candidates: RefCell<FxHashMap<(usize, usize, u32), crate::prefilter::Candidates>>,
}

impl<'r> Transaction<'r> {
    pub fn new(rules: &'r RuleSet, peer: Peer) -> Transaction<'r> {
        Transaction {
            rules,
            engine: rules.engine.unwrap_or(EngineMode::On),
            x: Exchange {
                peer,
                ..Default::default()
            },
            store: Store::default(),
            matched_now: Matched::default(),
            log: Vec::new(),
            interruption: None,
            allowed_through: 0,
            removed_ids: Vec::new(),
            removed_tags: Vec::new(),
            removed_targets: Vec::new(),
            processor: None,
            force_body_variable: false,
            request_body_access: rules.request_body_access,
            response_body_access: rules.response_body_access,
            prologue_applied: false,
            current: None,
            cache: RefCell::new(FxHashMap::with_capacity_and_hasher(256, Default::default())),
            candidates: RefCell::new(FxHashMap::with_capacity_and_hasher(64, Default::default())),
        }
    }

    /// A transaction in phase 1 just past the prologue: its variables, its last match.
    pub(crate) fn after_prologue(rules: &'r RuleSet) -> Transaction<'r> {
        let mut tx = Transaction::new(rules, Peer::default());
        tx.store = rules.prologue.store.clone();
        tx.matched_now.last.clone_from(&rules.prologue.last);
        tx.prologue_applied = true;
        tx
    }

    /// What the prologue's run left: the variables, the last match, and whether it
    /// stayed free of anything a request must see happen (a log entry, a verdict, a
    /// `ctl`).
    pub(crate) fn prologue_state(self) -> Option<(Store, Matched)> {
        let clean = self.log.is_empty()
            && self.interruption.is_none()
            && self.allowed_through == 0
            && self.removed_ids.is_empty()
            && self.removed_tags.is_empty()
            && self.removed_targets.is_empty()
            && self.engine == self.rules.engine.unwrap_or(EngineMode::On);
        clean.then_some((self.store, self.matched_now))
    }

    /// The rules that matched and log, in order.
    pub fn matched(&self) -> &[MatchedRule<'r>] {
        &self.log
    }

    pub fn interruption(&self) -> Option<&Interruption> {
        self.interruption.as_ref()
    }

    pub fn engine(&self) -> EngineMode {
        self.engine
    }

    /// A `TX` value (for tests and anomaly scores in audit events).
    pub fn tx(&self, key: &str) -> Option<&[u8]> {
        self.store.get("tx", key)
    }

    pub fn request_body_access(&self) -> bool {
        self.request_body_access && self.engine != EngineMode::Off
    }

    pub fn response_body_access(&self) -> bool {
        self.response_body_access && self.engine != EngineMode::Off
    }

    /// Whether the response with this Content-Type is inspected (`SecResponseBodyMimeType`).
    pub fn inspects_response_type(&self, content_type: &[u8]) -> bool {
        let mime = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or(b"")
            .trim_ascii();
        self.rules.response_mime_types.is_empty()
            || self
                .rules
                .response_mime_types
                .iter()
                .any(|t| t.as_bytes().eq_ignore_ascii_case(mime))
    }

    /// Phase 1: the request line and headers are in `x`.
    pub fn process_request_headers(&mut self) -> Option<&Interruption> {
        if let Some(ct) = self.x.header(b"content-type") {
            self.processor = Processor::for_content_type(ct);
        }
        self.x.reqbody_processor = self.processor.map(Processor::name);
        self.run(1);
        self.interruption.as_ref()
    }

    /// Adds request body bytes; applies `SecRequestBodyLimit`. Returns false once the
    /// body is past the limit and the rest should not be offered.
    pub fn append_request_body(&mut self, chunk: &[u8]) -> bool {
        let limit = self.rules.request_body_limit.unwrap_or(u64::MAX) as usize;
        let room = limit.saturating_sub(self.x.body.len());
        if chunk.len() <= room {
            self.x.body.extend_from_slice(chunk);
            return true;
        }
        self.x.body.extend_from_slice(&chunk[..room]);
        if self.rules.request_body_limit_action != Some(LimitAction::ProcessPartial)
            && self.engine == EngineMode::On
        {
            self.interruption = Some(Interruption {
                action: InterruptAction::Deny,
                status: 413,
                rule_id: None,
                phase: 2,
            });
        }
        self.x.inbound_data_error = true;
        false
    }

    /// Phase 2: parses the body with the chosen processor, then runs the rules.
    pub fn process_request_body(&mut self) -> Option<&Interruption> {
        if self.interruption.is_none() {
            self.parse_body();
            self.run(2);
        }
        self.interruption.as_ref()
    }

    fn parse_body(&mut self) {
        if !self.request_body_access() {
            return;
        }
        if self.force_body_variable && self.processor.is_none() {
            self.processor = Some(Processor::UrlEncoded);
        }
        self.x.reqbody_processor = self.processor.map(Processor::name);
        if self.force_body_variable {
            self.x.body_visible = true;
        }
        let Some(p) = self.processor else { return };
        // An empty body is not parsed (and so is no parse error), as in ModSecurity.
        if self.x.body.is_empty() {
            self.x.body_visible |= p == Processor::UrlEncoded;
            return;
        }
        let body = std::mem::take(&mut self.x.body);
        match p {
            Processor::UrlEncoded => {
                self.x.body_visible = true;
                self.x.urlencoded_error |= body::urlencoded::parse(&body, &mut self.x.args_post);
            }
            Processor::Json => {
                if let Err(e) = body::json::parse(&body, &mut self.x.args_post) {
                    self.x.reqbody_error = Some(e);
                }
            }
            Processor::Xml => match body::xml::parse(&body) {
                Ok(doc) => self.x.xml = Some(Box::new(doc)),
                Err(e) => self.x.reqbody_error = Some(e),
            },
            Processor::Multipart => {
                let ct = self.x.header(b"content-type").unwrap_or(b"").to_vec();
                let (m, error) = body::multipart::parse(&body, &ct);
                if error.is_some() {
                    self.x.reqbody_error = error;
                }
                self.x.args_post.extend(m.args.iter().cloned());
                self.x.multipart = Some(Box::new(m));
            }
        }
        self.x.body = body;
    }

    /// Phase 3: the response status and headers are in `x`.
    pub fn process_response_headers(&mut self) -> Option<&Interruption> {
        if self.interruption.is_none() {
            self.run(3);
        }
        self.interruption.as_ref()
    }

    /// Adds response body bytes up to `SecResponseBodyLimit`.
    pub fn append_response_body(&mut self, chunk: &[u8]) -> bool {
        let limit = self.rules.response_body_limit.unwrap_or(512 * 1024) as usize;
        let room = limit.saturating_sub(self.x.response_body.len());
        let take = chunk.len().min(room);
        self.x.response_body.extend_from_slice(&chunk[..take]);
        if take < chunk.len() {
            self.x.outbound_data_error = true;
            return false;
        }
        true
    }

    /// Phase 4: the response body (as much as was kept) is in `x`.
    pub fn process_response_body(&mut self) -> Option<&Interruption> {
        if self.interruption.is_none() {
            self.run(4);
        }
        self.interruption.as_ref()
    }

    /// Phase 5, which always runs.
    pub fn process_logging(&mut self) {
        self.run(5);
    }

    fn run(&mut self, phase: u8) {
        self.cache.get_mut().clear();
        self.candidates.get_mut().clear();
        if self.engine == EngineMode::Off || (phase <= self.allowed_through && phase != 5) {
            return;
        }
        let rules = self.rules;
        let entries = &rules.phases[phase as usize - 1];
        if phase != 1 {
            self.run_entries(phase, entries);
            return;
        }
        // Phase 1 leaves out the rule set's prologue, already run: it starts from the
        // variables the prologue left. The rules before it read none of them and cannot
        // skip or stop (see `prologue`), so those after it follow directly, seeing the
        // prologue's last match if it had one.
        let p = &rules.prologue;
        self.store = p.store.clone();
        self.prologue_applied = true;
        self.run_entries(phase, &entries[..p.lead.min(entries.len())]);
        if p.last.is_some() {
            self.matched_now.last.clone_from(&p.last);
        }
        self.run_entries(phase, &entries[p.start.min(entries.len())..]);
    }

    /// Runs `entries` of `phase` in order; returns the skip still pending at their end
    /// (a `skipAfter` marker not reached, or rules left to `skip`).
    pub(crate) fn run_entries(
        &mut self,
        phase: u8,
        entries: &'r [Entry],
    ) -> (Option<&'r str>, u32) {
        let mut skip_to: Option<&'r str> = None;
        let mut skip = 0u32;
        for e in entries {
            let r = match e {
                Entry::Marker(m) => {
                    if skip_to.is_some_and(|s| s == m) {
                        skip_to = None;
                    }
                    continue;
                }
                Entry::Rule(r) => r,
            };
            if skip_to.is_some() {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if self.removed(r) {
                continue;
            }
            // A skip decided at load (see `prologue::fold`), unless this transaction
            // removed targets, which could change the outcome, or never ran phase 1,
            // so that `TX` does not hold what the decision assumed.
            if let (Some(fixed), true, true) = (
                r.fixed,
                self.prologue_applied,
                self.removed_targets.is_empty(),
            ) {
                if fixed {
                    skip_to = r.skip_after.as_deref();
                }
                continue;
            }
            self.matched_now.vars.clear();
            self.current = Some(r);
            if !self.eval(r) {
                continue;
            }
            let (msg, data) = (
                r.msg.as_ref().map(|m| m.expand(self).into_owned()),
                r.logdata.as_ref().map(|m| m.expand(self).into_owned()),
            );
            if r.log && r.id.is_some() {
                self.log.push(MatchedRule {
                    rule: r,
                    phase,
                    msg: msg.unwrap_or_default(),
                    data: data.unwrap_or_default(),
                    matched_var_name: self
                        .matched_now
                        .last
                        .as_ref()
                        .map(|l| l.0.clone())
                        .unwrap_or_default(),
                    disruptive: self.engine == EngineMode::On
                        && !matches!(r.disruptive, None | Some(Disruptive::Pass)),
                });
            }
            if let Some(m) = &r.skip_after {
                skip_to = Some(m.as_str());
            }
            if let Some(n) = r.skip {
                skip = n;
            }
            if self.disrupt(r, phase) {
                break;
            }
        }
        self.current = None;
        (skip_to, skip)
    }

    /// Carries out the rule's disruptive action; true if rule processing stops.
    fn disrupt(&mut self, r: &CompiledRule, phase: u8) -> bool {
        if self.engine != EngineMode::On {
            return false;
        }
        let (action, default_status) = match &r.disruptive {
            None | Some(Disruptive::Pass) => return false,
            Some(Disruptive::Allow) => {
                self.allowed_through = if phase <= 2 { 2 } else { 4 };
                return true;
            }
            Some(Disruptive::Deny) => (InterruptAction::Deny, 403),
            Some(Disruptive::Drop) => (InterruptAction::Drop, 403),
            Some(Disruptive::Redirect(to)) => (
                InterruptAction::Redirect(String::from_utf8_lossy(&to.expand(self)).into_owned()),
                302,
            ),
        };
        self.interruption = Some(Interruption {
            action,
            status: r.status.unwrap_or(default_status),
            rule_id: r.id,
            phase,
        });
        true
    }

    fn removed(&self, r: &CompiledRule) -> bool {
        r.id.is_some_and(|id| self.removed_ids.iter().any(|range| range.contains(id)))
            || r.tags.iter().any(|t| self.removed_tags.contains(t))
    }

    /// Evaluates a rule and its chain; runs the per-match actions.
    fn eval(&mut self, r: &'r CompiledRule) -> bool {
        let hits = self.hits(r);
        if hits.is_empty() {
            return false;
        }
        for h in hits {
            self.matched_now
                .vars
                .push((h.name.clone(), h.value.clone()));
            self.matched_now.last = Some((h.name, h.value));
            if r.capture && !h.captures.is_empty() {
                for (i, c) in h.captures.into_iter().enumerate() {
                    self.store.set("tx", &i.to_string(), c);
                }
            }
            self.actions(r);
        }
        match &r.chained {
            Some(next) => self.eval(next),
            None => true,
        }
    }

    /// `setvar` and `ctl`, in order.
    fn actions(&mut self, r: &'r CompiledRule) {
        for sv in &r.setvars {
            let name = sv.name.expand(self).into_owned();
            let value = match sv.op {
                SetOp::Delete => Vec::new(),
                _ => sv.value.expand(self).into_owned(),
            };
            let name = String::from_utf8_lossy(&name);
            self.store.apply(&sv.collection, &name, &sv.op, &value);
        }
        for c in &r.ctls {
            self.ctl(c);
        }
    }

    fn ctl(&mut self, c: &RuleCtl) {
        match c {
            RuleCtl::RemoveTargetById(range, ts) => {
                for t in ts {
                    self.removed_targets.push((Scope::Id(*range), t.clone()));
                }
            }
            RuleCtl::RemoveTargetByTag(tag, ts) => {
                for t in ts {
                    self.removed_targets
                        .push((Scope::Tag(tag.clone()), t.clone()));
                }
            }
            RuleCtl::Plain(c) => match c {
                Ctl::RuleEngine(m) => self.engine = *m,
                Ctl::RuleRemoveById(ranges) => self.removed_ids.extend(ranges.iter().copied()),
                Ctl::RuleRemoveByTag(t) => self.removed_tags.push(t.clone()),
                Ctl::RequestBodyProcessor(p) => {
                    if let Some(p) = Processor::parse(p) {
                        self.processor = Some(p);
                        self.x.reqbody_processor = Some(p.name());
                    }
                }
                Ctl::RequestBodyAccess(b) => self.request_body_access = *b,
                Ctl::ResponseBodyAccess(b) => self.response_body_access = *b,
                Ctl::ForceRequestBodyVariable(b) => self.force_body_variable = *b,
                // Compiled into the other variants; audit settings are the proxy's.
                Ctl::RuleRemoveTargetById(..)
                | Ctl::RuleRemoveTargetByTag(..)
                | Ctl::AuditEngine(_)
                | Ctl::AuditLogParts(_) => {}
            },
        }
    }

    /// The values of a rule's targets that its operator matches.
    fn hits(&self, r: &CompiledRule) -> Vec<Hit> {
        let mut hits = Vec::new();
        // A rule without targets (SecAction) matches once, unconditionally.
        if r.targets.is_empty() {
            let out = r.operator.run(b"", self, r.capture);
            if out.matched {
                hits.push(Hit {
                    name: Vec::new(),
                    value: Vec::new(),
                    captures: Vec::new(),
                });
            }
            return hits;
        }
        let mut vals: Vec<Val<'_>> = Vec::with_capacity(16);
        for t in r.targets.iter().filter(|t| !t.exclude) {
            let start = vals.len();
            self.x.collect(t, &self.store, &self.matched_now, &mut vals);
            if t.count {
                let n = vals.len() - start;
                vals.truncate(start);
                vals.push(Val {
                    col: t.collection,
                    key: None,
                    value: Cow::Owned(n.to_string().into_bytes()),
                });
            }
        }
        // The exclusions that apply to this rule: its own `!` targets and the targets
        // removed for this transaction. Most rules have none.
        let removed: Vec<&Target> = self
            .removed_targets
            .iter()
            .filter(|(scope, _)| match scope {
                Scope::Id(range) => r.id.is_some_and(|id| range.contains(id)),
                Scope::Tag(tag) => r.tags.contains(tag),
            })
            .map(|(_, t)| t)
            .collect();
        let own = r.targets.iter().any(|t| t.exclude);
        for v in vals {
            if own || !removed.is_empty() {
                let key = v.key.as_deref().unwrap_or(b"");
                let hit = |t: &Target| t.collection == v.col && t.select.selects(key);
                if r.targets.iter().filter(|t| t.exclude).any(hit) || removed.iter().any(|t| hit(t))
                {
                    continue;
                }
            }
            self.test(r, &v, &mut hits);
        }
        hits
    }

    /// Transforms one value and runs the operator (on every stage with `multiMatch`).
    fn test(&self, r: &CompiledRule, v: &Val<'_>, hits: &mut Vec<Hit>) {
        let check = |value: &[u8], hits: &mut Vec<Hit>| {
            let out = r.operator.run(value, self, r.capture);
            if out.matched {
                hits.push(Hit {
                    name: v.name(),
                    value: value.to_vec(),
                    captures: out.captures,
                });
            }
        };
        if r.multi_match {
            let mut value: Cow<'_, [u8]> = Cow::Borrowed(&v.value);
            check(&value, hits);
            for t in &r.transforms {
                let next = match transform::apply(*t, &value) {
                    Cow::Owned(o) => Some(o),
                    Cow::Borrowed(_) => None,
                };
                if let Some(o) = next {
                    value = Cow::Owned(o);
                    check(&value, hits);
                }
            }
            return;
        }
        let t = self.transformed(r, v);
        let value: &[u8] = t.as_deref().unwrap_or(&v.value);
        if !self.may_match(r, v, value) {
            // None of the literals every match contains is there.
            if r.operator.negated() {
                hits.push(Hit {
                    name: v.name(),
                    value: value.to_vec(),
                    captures: Vec::new(),
                });
            }
            return;
        }
        check(value, hits)
    }

    /// False if `r`'s prefilter proves its `@rx` cannot match `value` (`v` transformed).
    /// The scan is shared by every rule of the same transformation chain, per value.
    fn may_match(&self, r: &CompiledRule, v: &Val<'_>, value: &[u8]) -> bool {
        let Some((key, slot)) = r.prefilter else {
            return true;
        };
        let Some(group) = self.rules.prefilters.get(&key) else {
            return true;
        };
        let bit = |bits: &[u64]| bits[slot as usize / 64] & (1 << (slot % 64)) != 0;
        if !Self::cacheable(v) {
            return bit(&group.candidates(value)[..]);
        }
        let ck = (v.value.as_ptr() as usize, v.value.len(), key);
        if let Some(bits) = self.candidates.borrow().get(&ck) {
            return bit(&bits[..]);
        }
        let bits = group.candidates(value);
        let found = bit(&bits[..]);
        self.candidates.borrow_mut().insert(ck, bits);
        found
    }

    /// Values of the request and response, which no rule changes during a phase.
    fn cacheable(v: &Val<'_>) -> bool {
        matches!(v.value, Cow::Borrowed(_))
            && !matches!(
                v.col,
                Collection::Tx
                    | Collection::Ip
                    | Collection::Global
                    | Collection::Session
                    | Collection::User
                    | Collection::MatchedVar
                    | Collection::MatchedVars
                    | Collection::MatchedVarName
                    | Collection::MatchedVarsNames
            )
    }

    /// `v` after `r`'s transformations; None if they leave it unchanged. Values of the
    /// request and response are cached for the phase; `TX` and the like, which rules
    /// change, are not.
    fn transformed(&self, r: &CompiledRule, v: &Val<'_>) -> Option<Arc<[u8]>> {
        let n = r.transforms.len();
        if n == 0 {
            return None;
        }
        let cacheable = Self::cacheable(v);
        let key = |i: usize| (v.value.as_ptr() as usize, v.value.len(), r.prefix_ids[i]);
        // The longest cached prefix, and what it gave.
        let (mut start, mut current): (usize, Option<Arc<[u8]>>) = (0, None);
        if cacheable {
            let cache = self.cache.borrow();
            for i in (0..n).rev() {
                if let Some(c) = cache.get(&key(i)) {
                    if i == n - 1 {
                        return c.clone();
                    }
                    (start, current) = (i + 1, c.clone());
                    break;
                }
            }
        }
        for i in start..n {
            let input: &[u8] = current.as_deref().unwrap_or(&v.value);
            if let Cow::Owned(o) = transform::apply(r.transforms[i], input) {
                current = Some(Arc::from(o));
            }
            if cacheable {
                self.cache.borrow_mut().insert(key(i), current.clone());
            }
        }
        current
    }
}

/// One matched value, copied out for the actions that follow.
struct Hit {
    name: Vec<u8>,
    value: Vec<u8>,
    captures: Vec<Vec<u8>>,
}

impl Vars for Transaction<'_> {
    fn var(&self, collection: &str, key: Option<&str>) -> Option<Cow<'_, [u8]>> {
        match collection {
            "tx" | "ip" | "global" | "session" | "user" | "resource" => {
                return self.store.get(collection, key?).map(Cow::Borrowed)
            }
            "matched_var" => {
                return self
                    .matched_now
                    .last
                    .as_ref()
                    .map(|l| Cow::Borrowed(l.1.as_slice()))
            }
            "matched_var_name" => {
                return self
                    .matched_now
                    .last
                    .as_ref()
                    .map(|l| Cow::Borrowed(l.0.as_slice()))
            }
            "rule" => {
                let r = self.current?;
                return match key?.to_ascii_lowercase().as_str() {
                    "id" => r.id.map(|id| Cow::Owned(id.to_string().into_bytes())),
                    "severity" => r.severity.map(|s| Cow::Owned(s.to_string().into_bytes())),
                    "phase" => Some(Cow::Owned(r.phase.to_string().into_bytes())),
                    _ => None,
                };
            }
            _ => {}
        }
        let col = Collection::parse(collection)?;
        let selector = match key {
            Some(k) => crate::variables::Selector::Key(k.to_string()),
            None => crate::variables::Selector::All,
        };
        let t = Target {
            collection: col,
            select: crate::target::Select::compile(&selector).ok()?,
            count: false,
            exclude: false,
        };
        let mut out = Vec::new();
        self.x.collect(&t, &self.store, &self.matched_now, &mut out);
        out.into_iter()
            .next()
            .map(|v| Cow::Owned(v.value.into_owned()))
    }
}
