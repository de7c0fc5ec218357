//! The policy input document of DESIGN.md section 3, built as regorus values: content appears
//! as counts and types only, and the parts that do not change per request are shared, not
//! rebuilt.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::facts::{RequestFacts, ANONYMOUS_USER};
use super::PolicySet;
use crate::catalog::{AiService, Catalog, Fingerprint};
use crate::identity::{DeviceContext, Identity, UserContext};
use crate::inspect::Inspection;

/// Documents of the policy input that never change, converted once.
static ANONYMOUS_USER_INPUT: LazyLock<regorus::Value> = LazyLock::new(|| {
    regorus::Value::from(json!({
        "id": ANONYMOUS_USER, "email": null, "department": null, "department_chain": [],
        "groups": [], "roles": [], "risk_score": 0, "clearance_level": null,
        "employee_type": null, "status": null, "suspended": false, "allowed_ai_services": [],
        "prohibited_ai_services": [], "authenticated": false, "method": "anonymous",
    }))
});
static METHOD_KEY: LazyLock<regorus::Value> = LazyLock::new(|| regorus::Value::from("method"));
static NO_DEVICE_INPUT: LazyLock<regorus::Value> = LazyLock::new(|| {
    regorus::Value::from(json!({"id": null, "hostname": null, "crown_jewel": false,
        "sensitivity": null, "compliance_status": null, "data_classification": []}))
});
static NO_HEADERS_INPUT: LazyLock<regorus::Value> = LazyLock::new(regorus::Value::new_object);
static UNCLASSIFIED_CONTENT_INPUT: LazyLock<regorus::Value> = LazyLock::new(|| {
    regorus::Value::from(
        json!({"classified": false, "entities": [], "data_classification": [],
        "prompt_chars": 0, "truncated": false, "files": []}),
    )
});

/// A policy-input object built as regorus values directly: converting a JSON tree afterwards
/// cost as much as building it. Each call site's keys are allocated once, in a template object
/// (sorted and frozen); a request clones the template and sets the values in place, so an object
/// costs one allocation instead of one per key plus a sort and a tree.
macro_rules! object {
    ($($key:literal => $value:expr),+ $(,)?) => {{
        const KEYS: usize = [$($key),+].len();
        static SHAPE: LazyLock<Shape<KEYS>> = LazyLock::new(|| Shape::new([$($key),+]));
        SHAPE.build([$($value),+])
    }};
}

struct Shape<const N: usize> {
    keys: [regorus::Value; N],
    template: regorus::Value,
}

impl<const N: usize> Shape<N> {
    fn new(names: [&'static str; N]) -> Shape<N> {
        let keys = names.map(regorus::Value::from);
        let template = keys
            .iter()
            .map(|key| (key.clone(), regorus::Value::Null))
            .collect::<BTreeMap<_, _>>()
            .into();
        Shape { keys, template }
    }

    fn build(&self, values: [regorus::Value; N]) -> regorus::Value {
        let mut built = self.template.clone();
        for (key, value) in self.keys.iter().zip(values) {
            set_member(&mut built, key, value);
        }
        built
    }
}

/// Writes the object's existing member `key` in place: the frozen storage stays, where an
/// `insert` takes it apart and puts it back. Only the first write to a shared template copies it.
fn set_member(object: &mut regorus::Value, key: &regorus::Value, value: regorus::Value) {
    if let Some(slot) = object
        .as_object_mut()
        .ok()
        .and_then(|fields| fields.get_mut(key))
    {
        *slot = value;
    }
}

/// Builds the policy input of one snapshot's requests.
#[derive(Debug)]
pub struct InputBuilder {
    /// Each service's `resource` document, built once per snapshot: it is the largest part of
    /// the input and the same for every request to the service.
    resources: HashMap<Uuid, regorus::Value>,
    /// Whether `input.request.headers` is worth building: no shipped policy reads it, and the
    /// map cost a tree node and two strings a header on every request.
    headers_read: bool,
}

impl InputBuilder {
    pub fn new(catalog: &Catalog, policies: &PolicySet) -> InputBuilder {
        let resources = catalog
            .services()
            .iter()
            .map(|s| (s.service_id, regorus::Value::from(service_resource(s))))
            .collect();
        let headers_read = policies.may_read(&["request", "headers"]);
        InputBuilder {
            resources,
            headers_read,
        }
    }

    /// The input document of `request`.
    pub fn build(
        &self,
        request: &RequestFacts<'_>,
        fingerprint: &Fingerprint,
        inspection: Option<&Inspection>,
    ) -> regorus::Value {
        let action = inspection.map_or("access_ai_service", |i| i.extracted.action().as_str());
        let request_input = object! {
            "method" => request.method.into(),
            "scheme" => request.scheme.into(),
            "host" => request.host.into(),
            "port" => u64::from(request.port).into(),
            "path" => request.path.into(),
            "url" => request.url().into(),
            "headers" => self.headers(request.headers),
            "content_type" => optional(request.header("content-type")),
            "body_bytes" => request.body.len().into(),
            "action" => action.into(),
        };
        let time = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let source_ip = request
            .client
            .map_or(regorus::Value::Null, |c| c.ip().to_string().into());
        let context = object! {
            "time" => time.into(),
            "source_ip" => source_ip,
            "mode" => request.source.mode().into(),
            "location_type" => "corporate".into(),
        };
        let identity = request.identity;
        object! {
            "user" => user(identity),
            "device" => match identity.device.as_deref() {
                Some(d) => d.policy_input.get_or_init(|| device_input(d)).clone(),
                None => NO_DEVICE_INPUT.clone(),
            },
            "resource" => self.resource(request.host, fingerprint),
            "request" => request_input,
            "content" => content(inspection),
            "context" => context,
        }
    }

    fn resource(&self, host: &str, fingerprint: &Fingerprint) -> regorus::Value {
        match fingerprint.service.as_deref() {
            Some(s) => match self.resources.get(&s.service_id) {
                Some(resource) => resource.clone(),
                // A service outside this snapshot's catalog cannot be fingerprinted; stay correct.
                None => regorus::Value::from(service_resource(s)),
            },
            None if fingerprint.unknown_ai => regorus::Value::from(json!({
                "type": "ai_service", "id": null, "name": host, "vendor": null, "service_type": null,
                "risk_tier": "high", "risk_score": 70, "approval_status": "unknown", "approved_for": [],
                "prohibited_for": [], "capabilities": [], "data_handling": null, "certifications": [], "data_regions": [],
            })),
            None => regorus::Value::from(json!({
                "type": "url", "id": null, "name": host, "approval_status": null, "approved_for": [],
                "prohibited_for": [], "capabilities": [], "certifications": [], "data_regions": [],
            })),
        }
    }

    /// `input.request.headers`, without credentials.
    fn headers(&self, headers: &http::HeaderMap) -> regorus::Value {
        if !self.headers_read {
            return NO_HEADERS_INPUT.clone();
        }
        headers
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "authorization" | "cookie" | "proxy-authorization" | "x-api-key"
                )
            })
            .filter_map(|(name, value)| {
                Some((
                    regorus::Value::from(name.as_str()),
                    regorus::Value::from(value.to_str().ok()?),
                ))
            })
            .collect::<BTreeMap<_, _>>()
            .into()
    }
}

/// `input.content`: counts and types, never the content itself.
fn content(inspection: Option<&Inspection>) -> regorus::Value {
    let Some(i) = inspection else {
        return UNCLASSIFIED_CONTENT_INPUT.clone();
    };
    let counts = i.counts();
    object! {
        "classified" => true.into(),
        "entities" => serialized(&counts),
        "data_classification" => array(i.data_classification().iter().map(|c| c.as_str())),
        "prompt_chars" => i.extracted.prompt_chars.into(),
        "truncated" => i.extracted.truncated.into(),
        "files" => serialized(&i.extracted.files),
    }
}

/// `input.user`: the attributed user's cached document, or the anonymous one.
fn user(identity: &Identity) -> regorus::Value {
    match identity.user.as_deref() {
        Some(u) => {
            let (method, document) = u
                .policy_input
                .get_or_init(|| (identity.method, user_input(u, identity.method)));
            if *method == identity.method {
                document.clone()
            } else {
                user_input(u, identity.method)
            }
        }
        // The resolver's only method without a user: shared as it is, where setting the member
        // copied the whole document per request.
        None if identity.method == "anonymous" => ANONYMOUS_USER_INPUT.clone(),
        None => {
            let mut anonymous = ANONYMOUS_USER_INPUT.clone();
            set_member(&mut anonymous, &METHOD_KEY, identity.method.into());
            anonymous
        }
    }
}

/// `input.user` of an attributed request. Built once per cached user context (and method).
fn user_input(u: &UserContext, method: &'static str) -> regorus::Value {
    object! {
        "id" => u.id.to_string().into(),
        "email" => u.email.as_str().into(),
        "department" => optional(u.department.as_deref()),
        "department_chain" => strings(&u.department_chain),
        "groups" => strings(&u.groups),
        "roles" => strings(&u.roles),
        "risk_score" => u.risk_score.into(),
        "clearance_level" => optional(u.clearance_level.as_deref()),
        "employee_type" => optional(u.employee_type.as_deref()),
        "status" => u.status.as_str().into(),
        "suspended" => (u.status == "suspended").into(),
        "allowed_ai_services" => strings(&u.allowed_ai_services),
        "prohibited_ai_services" => strings(&u.prohibited_ai_services),
        "authenticated" => true.into(),
        "method" => method.into(),
    }
}

/// `input.device` of a request from a known asset. Built once per cached device context.
fn device_input(d: &DeviceContext) -> regorus::Value {
    object! {
        "id" => d.id.to_string().into(),
        "hostname" => optional(d.hostname.as_deref()),
        "crown_jewel" => d.crown_jewel.into(),
        "sensitivity" => optional(d.sensitivity.as_deref()),
        "compliance_status" => optional(d.compliance_status.as_deref()),
        "data_classification" => strings(&d.data_classification),
    }
}

fn optional(value: Option<&str>) -> regorus::Value {
    value.map_or(regorus::Value::Null, regorus::Value::from)
}

fn array<'a>(values: impl Iterator<Item = &'a str>) -> regorus::Value {
    values.map(regorus::Value::from).collect::<Vec<_>>().into()
}

fn strings(values: &[String]) -> regorus::Value {
    array(values.iter().map(String::as_str))
}

/// A rarely non-empty list (entity counts, uploaded files) through its serde form.
fn serialized<T: serde::Serialize>(values: &[T]) -> regorus::Value {
    if values.is_empty() {
        return regorus::Value::new_array();
    }
    serde_json::to_value(values).map_or(regorus::Value::Null, regorus::Value::from)
}

/// A catalog service as the policy input's `resource`.
fn service_resource(s: &AiService) -> Value {
    json!({
        "type": "ai_service", "id": s.service_id, "name": s.name, "vendor": s.vendor,
        "service_type": s.service_type, "risk_tier": s.risk_tier.as_str(), "risk_score": s.risk_score,
        "approval_status": s.approval_status.as_str(), "approved_for": s.approved_for,
        "prohibited_for": s.prohibited_for, "capabilities": s.capabilities,
        "data_handling": s.data_handling, "certifications": s.certifications, "data_regions": s.data_regions,
        "slug": s.slug, "tenant_restriction_headers": s.tenant_restriction_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_from_a_shared_template_equals_one_built_key_by_key() {
        // One call site, so one template: each build must get its own values.
        let build =
            |n: u64| object! { "b" => n.into(), "a" => "x".into(), "c" => regorus::Value::Null };
        let expected = |n: u64| regorus::Value::from(json!({"a": "x", "b": n, "c": null}));
        let (first, second) = (build(1), build(2));
        assert_eq!(first, expected(1));
        assert_eq!(second, expected(2));
        assert_eq!(build(3), expected(3));
    }
}
