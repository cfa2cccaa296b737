//! Web application firewall policies. The rule base (Gatehouse's engine settings,
//! the Core Rule Set's setup and its rules, and their phrase files) is read once from
//! disk by the caller ([`WafBase::load`]); translation stays pure: each policy (a
//! SecurityPolicy's `spec.waf`, or an Ingress's `gatehouse.dev/waf*` annotations)
//! becomes SecLang text (mode, paranoia level, thresholds, limits, exclusions, the
//! user's own rules) compiled with the base into a rule set. Equal policies share one
//! compiled rule set, and a translation that leaves the WAF settings alone reuses the
//! previous one, so an unrelated config change never recompiles CRS.

use gatehouse_model::policy::Waf;
use gatehouse_model::{ConfigError, StoredObject};
use gatehouse_security::load::{load_inline, Located};
use gatehouse_security::ruleset::{compile_with, RuleSet};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Gatehouse's engine settings under CRS (those of ModSecurity's recommended file).
pub const RECOMMENDED: &str = include_str!("../../security/conf/recommended.conf");

/// The rule base every WAF policy starts from.
pub struct WafBase {
    dir: PathBuf,
    /// Engine settings and CRS's setup file.
    setup: Vec<Located>,
    /// CRS's rule files.
    rules: Vec<Located>,
    /// Phrase files (`@pmFromFile`) by path.
    data: HashMap<PathBuf, String>,
    /// Compiled rule sets by policy text, while some Snapshot still uses them.
    cache: Mutex<HashMap<String, Weak<RuleSet>>>,
}

impl std::fmt::Debug for WafBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WafBase")
            .field("dir", &self.dir)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl WafBase {
    /// Reads a CRS directory: `crs-setup.conf` (or `crs-setup.conf.example`),
    /// `rules/*.conf` and `rules/*.data`.
    pub fn load(dir: &Path) -> Result<WafBase, String> {
        let setup_file = ["crs-setup.conf", "crs-setup.conf.example"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| format!("{}: no crs-setup.conf(.example)", dir.display()))?;
        let mut setup = load_inline(RECOMMENDED, Path::new("gatehouse-recommended.conf"))
            .map_err(|e| e.to_string())?;
        setup.extend(gatehouse_security::load_file(&setup_file).map_err(|e| e.to_string())?);
        let rules_dir = dir.join("rules");
        let rules =
            gatehouse_security::load_str("Include rules/*.conf\n", &dir.join("crs.conf"), dir)
                .map_err(|e| e.to_string())?;
        let mut data = HashMap::new();
        let entries =
            std::fs::read_dir(&rules_dir).map_err(|e| format!("{}: {e}", rules_dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "data") {
                let text =
                    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                data.insert(p, text);
            }
        }
        Ok(WafBase {
            dir: dir.to_path_buf(),
            setup,
            rules,
            data,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The rule set for a policy: `pre` (generated settings) and `user` (the policy's
    /// own rules, named `user_name` in errors) run between the setup and the rules,
    /// `post` after the rules (where exclusions must be).
    fn rule_set(
        &self,
        pre: &str,
        user: &str,
        user_name: &Path,
        post: &str,
    ) -> Result<Arc<RuleSet>, String> {
        let key = format!("{pre}\n\u{0}\n{user}\n\u{0}\n{post}");
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = cache.get(&key).and_then(Weak::upgrade) {
            return Ok(set);
        }
        let mut all = self.setup.clone();
        let generated = Path::new("gatehouse-policy.conf");
        all.extend(load_inline(pre, generated).map_err(|e| e.to_string())?);
        all.extend(load_inline(user, user_name).map_err(|e| e.to_string())?);
        all.extend(self.rules.iter().cloned());
        all.extend(load_inline(post, generated).map_err(|e| e.to_string())?);
        let set = Arc::new(compile_with(all, &self.data).map_err(|e| e.to_string())?);
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&set));
        Ok(set)
    }
}

/// What the WAF does with its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WafMode {
    DetectionOnly,
    Blocking,
}

/// A compiled WAF policy, attached to the routes it protects.
#[derive(Debug)]
pub struct WafPolicy {
    /// `SecurityPolicy ns/name` or `Ingress ns/name annotations`.
    pub from: String,
    pub mode: WafMode,
    pub rules: Arc<RuleSet>,
    pub inspect_responses: bool,
    pub block_status: u16,
    pub block_body: Option<String>,
    pub block_content_type: String,
}

/// The WAF an Ingress's annotations ask for, compiled; errors name the annotation.
pub(crate) fn from_ingress(
    o: &StoredObject,
    annotations: &BTreeMap<String, String>,
    base: Option<&WafBase>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<WafPolicy>> {
    let waf = from_annotations(o, annotations, errors)?;
    let from = format!("Ingress {}/{} annotations", o.namespace(), o.name());
    let field = |f: &str| {
        let a = match f {
            "spec.waf.paranoiaLevel" => "waf-paranoia-level",
            "spec.waf.inboundAnomalyThreshold" => "waf-anomaly-threshold",
            f if f.starts_with("spec.waf.exclusions") => "waf-exclude-ids",
            _ => "waf",
        };
        format!("metadata.annotations[\"gatehouse.dev/{a}\"]")
    };
    compile(&waf, &from, base, &|f, m| o.error(&field(f), m), errors).flatten()
}

/// The WAF an Ingress's annotations ask for: `gatehouse.dev/waf` (the mode),
/// `gatehouse.dev/waf-paranoia-level`, `gatehouse.dev/waf-anomaly-threshold` and
/// `gatehouse.dev/waf-exclude-ids` (comma-separated ids or ranges).
fn from_annotations(
    o: &StoredObject,
    a: &BTreeMap<String, String>,
    errors: &mut Vec<ConfigError>,
) -> Option<Waf> {
    let get = |k: &str| a.get(&format!("gatehouse.dev/{k}")).map(|v| v.trim());
    let mode = get("waf")?;
    let number = |k: &str, errors: &mut Vec<ConfigError>| -> Option<u32> {
        let v = get(k)?;
        match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(o.error(
                    &format!("metadata.annotations[\"gatehouse.dev/{k}\"]"),
                    format!("{v:?} is not a whole number"),
                ));
                None
            }
        }
    };
    let paranoia = number("waf-paranoia-level", errors);
    let threshold = number("waf-anomaly-threshold", errors);
    let ids: Vec<String> = get("waf-exclude-ids")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some(Waf {
        mode: mode.to_string(),
        paranoia_level: paranoia.map(|p| p.min(255) as u8),
        inbound_anomaly_threshold: threshold,
        exclusions: match ids.is_empty() {
            true => Vec::new(),
            false => vec![gatehouse_model::policy::WafExclusion {
                ids,
                ..Default::default()
            }],
        },
        ..Default::default()
    })
}

type ErrorAt<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

/// A rule id or an inclusive range (`920000-920999`).
fn id_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once('-').unwrap_or((s.trim(), s.trim()));
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// SecLang quoting for a directive argument.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Checks and compiles `spec.waf`. Some(None): the WAF is off. None: errors.
pub(crate) fn compile(
    w: &Waf,
    from: &str,
    base: Option<&WafBase>,
    at: &ErrorAt<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<Option<Arc<WafPolicy>>> {
    let before = errors.len();
    let mut err = |field: &str, msg: String| errors.push(at(field, msg));
    let mode = match w.mode.as_str() {
        "Off" => return Some(None),
        "DetectionOnly" => WafMode::DetectionOnly,
        "Blocking" => WafMode::Blocking,
        other => {
            err(
                "spec.waf.mode",
                format!("{other:?} is not Off, DetectionOnly or Blocking"),
            );
            return None;
        }
    };
    let paranoia = w.paranoia_level.unwrap_or(1);
    if !(1..=4).contains(&paranoia) {
        err(
            "spec.waf.paranoiaLevel",
            format!("{paranoia} is not 1 to 4"),
        );
    }
    let limit_action = match w.request_body_limit_action.as_deref().unwrap_or("Reject") {
        a @ ("Reject" | "ProcessPartial") => a,
        other => {
            err(
                "spec.waf.requestBodyLimitAction",
                format!("{other:?} is not Reject or ProcessPartial"),
            );
            "Reject"
        }
    };
    let status = w
        .block_response
        .as_ref()
        .and_then(|b| b.status)
        .unwrap_or(403);
    if !(400..=599).contains(&status) {
        err(
            "spec.waf.blockResponse.status",
            format!("{status} is not 400 to 599"),
        );
    }
    let inspect_responses = w.inspect_responses.unwrap_or(false);
    let mut pre = String::new();
    let _ = writeln!(
        pre,
        "SecRuleEngine {}",
        if mode == WafMode::Blocking {
            "On"
        } else {
            "DetectionOnly"
        }
    );
    let _ = writeln!(
        pre,
        "SecRequestBodyLimit {}",
        w.request_body_limit.unwrap_or(131_072)
    );
    let _ = writeln!(pre, "SecRequestBodyLimitAction {limit_action}");
    let _ = writeln!(
        pre,
        "SecResponseBodyAccess {}",
        if inspect_responses { "On" } else { "Off" }
    );
    let mut setvars = format!(
        "setvar:tx.blocking_paranoia_level={paranoia},setvar:tx.detection_paranoia_level={paranoia}"
    );
    if let Some(t) = w.inbound_anomaly_threshold {
        let _ = write!(setvars, ",setvar:tx.inbound_anomaly_score_threshold={t}");
    }
    if let Some(t) = w.outbound_anomaly_threshold {
        let _ = write!(setvars, ",setvar:tx.outbound_anomaly_score_threshold={t}");
    }
    let _ = writeln!(pre, "SecAction \"id:900100,phase:1,pass,nolog,{setvars}\"");
    let mut post = String::new();
    for (i, e) in w.exclusions.iter().enumerate() {
        let field = format!("spec.waf.exclusions[{i}]");
        if e.ids.is_empty() && e.tags.is_empty() {
            err(&field, "names no ids and no tags".into());
        }
        for id in &e.ids {
            let Some((a, b)) = id_range(id) else {
                err(
                    &format!("{field}.ids"),
                    format!("{id:?} is not a rule id or range"),
                );
                continue;
            };
            let range = if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            };
            if e.targets.is_empty() {
                let _ = writeln!(post, "SecRuleRemoveById {range}");
            }
            for t in &e.targets {
                let _ = writeln!(
                    post,
                    "SecRuleUpdateTargetById {range} {}",
                    quoted(&format!("!{t}"))
                );
            }
        }
        for tag in &e.tags {
            if e.targets.is_empty() {
                let _ = writeln!(post, "SecRuleRemoveByTag {}", quoted(tag));
            }
            for t in &e.targets {
                let _ = writeln!(
                    post,
                    "SecRuleUpdateTargetByTag {} {}",
                    quoted(tag),
                    quoted(&format!("!{t}"))
                );
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    let Some(base) = base else {
        errors.push(at(
            "spec.waf",
            "no WAF rule set is loaded (start gatehouse with --waf-rules DIR)".into(),
        ));
        return None;
    };
    let user_name = PathBuf::from(format!("{from} spec.waf.rules"));
    let user = w.rules.as_deref().unwrap_or("");
    match base.rule_set(&pre, user, &user_name, &post) {
        Ok(rules) => Some(Some(Arc::new(WafPolicy {
            from: from.to_string(),
            mode,
            rules,
            inspect_responses,
            block_status: status,
            block_body: w.block_response.as_ref().and_then(|b| b.body.clone()),
            block_content_type: w
                .block_response
                .as_ref()
                .and_then(|b| b.content_type.clone())
                .unwrap_or_else(|| "text/plain; charset=utf-8".into()),
        }))),
        Err(e) => {
            let field = match e.contains("spec.waf.rules") {
                true => "spec.waf.rules",
                false => "spec.waf",
            };
            errors.push(at(field, e));
            None
        }
    }
}
