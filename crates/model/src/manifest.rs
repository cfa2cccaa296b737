//! Manifest parsing: multi-document YAML (YAML 1.2 booleans), JSON and `kind: List`, into
//! typed objects, with errors that name the file, line, object and field.

use crate::gateway::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use crate::object::{Object, Origin, StoredObject};
use crate::ConfigError;
use k8s_openapi::ByteString;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// The result of parsing one file: the objects it holds, and how many documents were of
/// kinds Gatehouse does not read (Deployments and the like are skipped, not errors).
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<StoredObject>,
    pub skipped: usize,
}

/// Parses one manifest file's text. `file` is the name used in errors.
pub fn parse_manifest(file: &str, text: &str) -> Result<Parsed, Vec<ConfigError>> {
    let mut parsed = Parsed::default();
    let mut errors = Vec::new();
    let trimmed = text.trim_start();
    // Documents are parsed one at a time and converted at once, so a file of thousands
    // of objects never holds all their JSON trees together.
    let docs: Box<dyn Iterator<Item = (usize, String, Result<Value, ConfigError>)>> =
        if file.ends_with(".json") || trimmed.starts_with('{') || trimmed.starts_with('[') {
            let v = serde_json::from_str::<Value>(text)
                .map_err(|e| ConfigError::file(file, Some(e.line()), format!("invalid JSON: {e}")));
            Box::new(std::iter::once((1, text.to_string(), v)))
        } else {
            Box::new(split_documents(text).into_iter().map(|(line, doc)| {
                let v = parse_yaml_doc(&doc).map_err(|(l, m)| {
                    ConfigError::file(
                        file,
                        Some(line + l.unwrap_or(1) - 1),
                        format!("invalid YAML: {m}"),
                    )
                });
                (line, doc, v)
            }))
        };
    for (line, doc, value) in docs {
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let text: Arc<str> = Arc::from(doc.as_str());
        let items: Vec<(String, Value)> = match value {
            Value::Null => continue,
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                match m.get("items") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("items[{i}]."), v.clone()))
                        .collect(),
                    _ => Vec::new(),
                }
            }
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]."), v))
                .collect(),
            v => vec![(String::new(), v)],
        };
        for (prefix, value) in items {
            let origin = Origin {
                file: file.to_string(),
                start_line: line,
                text: text.clone(),
                prefix,
            };
            match to_object(value, Some(&origin)) {
                Ok(Some(o)) => parsed.objects.push(o),
                Ok(None) => parsed.skipped += 1,
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

/// Splits YAML text on `---` document markers; returns each document with its 1-based
/// first line.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line.starts_with("---")
            && line[3..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '#');
        if is_marker {
            if !cur.trim().is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            start = i + 2;
            let rest = line[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                // `--- {inline}` starts the document on the marker line.
                cur.push_str(rest);
                cur.push('\n');
                start = i + 1;
            }
        } else if line.trim_end() == "..." {
            continue;
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        docs.push((start, cur));
    }
    docs
}

fn parse_yaml_doc(doc: &str) -> Result<Value, (Option<usize>, String)> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Value>(doc, options).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize);
        let msg = e.without_snippet().to_string();
        let msg = msg.lines().next().unwrap_or("").to_string();
        (line, msg)
    })
}

fn origin_error(
    origin: Option<&Origin>,
    value: &Value,
    field: &str,
    message: String,
) -> ConfigError {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (file, line) = match origin {
        Some(o) => {
            let rel = crate::locate::locate(&o.text, &format!("{}{}", o.prefix, field));
            (Some(o.file.clone()), Some(o.start_line + rel.unwrap_or(0)))
        }
        None => (None, None),
    };
    ConfigError {
        file,
        line,
        kind,
        namespace,
        name,
        field: field.to_string(),
        message,
    }
}

fn typed<T: DeserializeOwned>(value: Value, origin: Option<&Origin>) -> Result<T, ConfigError> {
    let copy = value.clone();
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        origin_error(origin, &copy, &path, e.into_inner().to_string())
    })
}

/// Converts one document to a typed object; `Ok(None)` for kinds Gatehouse ignores.
/// Converts one object's JSON (from a file or from the API server) to a typed object.
/// `Ok(None)` for kinds Gatehouse does not read.
pub fn object_from_value(value: Value) -> Result<Option<StoredObject>, ConfigError> {
    to_object(value, None)
}

fn to_object(value: Value, origin: Option<&Origin>) -> Result<Option<StoredObject>, ConfigError> {
    let Some(kind) = value
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(origin_error(
            origin,
            &value,
            "kind",
            "missing field `kind`".into(),
        ));
    };
    let api = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let group = api.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let known_versions: &[&str] = match (group, kind.as_str()) {
        ("networking.k8s.io", "Ingress" | "IngressClass") => &["networking.k8s.io/v1"],
        ("", "Service" | "Secret" | "Namespace" | "Pod" | "Node") => &["v1"],
        ("discovery.k8s.io", "EndpointSlice") => &["discovery.k8s.io/v1"],
        ("gateway.networking.k8s.io", "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute") => &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
        ("gateway.networking.k8s.io", "ReferenceGrant") => &[
            "gateway.networking.k8s.io/v1beta1",
            "gateway.networking.k8s.io/v1",
        ],
        ("gatehouse.dev", "BackendTrafficPolicy") => &["gatehouse.dev/v1alpha1"],
        ("gatehouse.dev", "SecurityPolicy") => &["gatehouse.dev/v1alpha1"],
        ("gatehouse.dev", "SourceBlock" | "TrafficAdjustment") => &["gatehouse.dev/v1alpha1"],
        ("gatehouse.dev", "AuthorizationPolicy" | "PeerAuthentication") => {
            &["gatehouse.dev/v1alpha1"]
        }
        ("gateway.networking.k8s.io", "TCPRoute") => &["gateway.networking.k8s.io/v1alpha2"],
        ("gateway.networking.k8s.io", "TLSRoute") => &[
            "gateway.networking.k8s.io/v1alpha2",
            "gateway.networking.k8s.io/v1alpha3",
        ],
        _ => return Ok(None),
    };
    if !known_versions.contains(&api.as_str()) {
        return Err(origin_error(
            origin,
            &value,
            "apiVersion",
            format!(
                "unsupported apiVersion {api:?} for {kind}; use {}",
                known_versions[0]
            ),
        ));
    }
    let name_ok = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !name_ok {
        return Err(origin_error(
            origin,
            &value,
            "metadata.name",
            "metadata.name is required".into(),
        ));
    }
    let object = match kind.as_str() {
        "Ingress" => Object::Ingress(typed(value, origin)?),
        "IngressClass" => Object::IngressClass(typed(value, origin)?),
        "Service" => Object::Service(typed(value, origin)?),
        "EndpointSlice" => Object::EndpointSlice(typed(value, origin)?),
        "Secret" => {
            let mut secret: k8s_openapi::api::core::v1::Secret = typed(value, origin)?;
            // As the API server does: stringData is merged into data.
            if let Some(sd) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(Default::default);
                for (k, v) in sd {
                    data.insert(k, ByteString(v.into_bytes()));
                }
            }
            Object::Secret(secret)
        }
        "Namespace" => Object::Namespace(typed(value, origin)?),
        "GatewayClass" => Object::GatewayClass(typed::<GatewayClass>(value, origin)?),
        "Gateway" => Object::Gateway(typed::<Gateway>(value, origin)?),
        "HTTPRoute" => Object::HttpRoute(typed::<HttpRoute>(value, origin)?),
        "GRPCRoute" => Object::GrpcRoute(typed::<GrpcRoute>(value, origin)?),
        "TCPRoute" => Object::TcpRoute(typed(value, origin)?),
        "TLSRoute" => Object::TlsRoute(typed(value, origin)?),
        "ReferenceGrant" => Object::ReferenceGrant(typed::<ReferenceGrant>(value, origin)?),
        "BackendTrafficPolicy" => Object::BackendTrafficPolicy(typed(value, origin)?),
        "SecurityPolicy" => Object::SecurityPolicy(typed(value, origin)?),
        "SourceBlock" => Object::SourceBlock(typed(value, origin)?),
        "TrafficAdjustment" => Object::TrafficAdjustment(typed(value, origin)?),
        "Pod" => Object::Pod(typed(value, origin)?),
        "Node" => Object::Node(typed(value, origin)?),
        "AuthorizationPolicy" => Object::AuthorizationPolicy(typed(value, origin)?),
        "PeerAuthentication" => Object::PeerAuthentication(typed(value, origin)?),
        _ => return Ok(None),
    };
    Ok(Some(StoredObject {
        object,
        origin: origin.cloned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_and_lists() {
        let text = "apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec:
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: skipped}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {name: s}
  type: kubernetes.io/tls
  stringData: {tls.crt: abc}
";
        let p = parse_manifest("x.yaml", text).expect("parses");
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.skipped, 1);
        assert_eq!(p.objects[0].key().to_string(), "Service ns/a");
        let Object::Secret(s) = &p.objects[1].object else {
            panic!("not a secret")
        };
        assert_eq!(
            s.data
                .as_ref()
                .and_then(|d| d.get("tls.crt"))
                .map(|b| b.0.clone()),
            Some(b"abc".to_vec())
        );
        assert_eq!(p.objects[1].origin.as_ref().map(|o| o.start_line), Some(11));
    }

    #[test]
    fn type_error_names_file_line_object_and_field() {
        let text = "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
spec:
  rules:
  - host: a.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: notanumber
";
        let errs = parse_manifest("ing.yaml", text).expect_err("must fail");
        let msg = errs[0].to_string();
        assert!(msg.starts_with("ing.yaml:18: Ingress shop/web: field spec.rules[0].http.paths[0].backend.service.port.number:"), "{msg}");
    }

    #[test]
    fn yaml_1_2_booleans_and_syntax_errors() {
        let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: a\n";
        let errs = parse_manifest("bad.yaml", bad).expect_err("must fail");
        assert!(errs[0].to_string().starts_with("bad.yaml:"), "{}", errs[0]);
        // `yes` stays a string under YAML 1.2, so a label value of yes is fine.
        let ok = "apiVersion: v1\nkind: Service\nmetadata: {name: a, labels: {x: yes}}\n";
        let p = parse_manifest("ok.yaml", ok).expect("parses");
        assert_eq!(p.objects.len(), 1);
    }

    #[test]
    fn json_is_accepted() {
        let text = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"j"}}"#;
        let p = parse_manifest("a.json", text).expect("parses");
        assert_eq!(p.objects[0].key().to_string(), "Service default/j");
    }

    #[test]
    fn unsupported_version_is_an_error() {
        let text = "apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: a}\n";
        let errs = parse_manifest("v.yaml", text).expect_err("must fail");
        assert!(
            errs[0].to_string().contains("field apiVersion"),
            "{}",
            errs[0]
        );
    }
}
